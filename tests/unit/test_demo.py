"""The synthetic demo scene generator: determinism, formats, label coverage and agreement with the files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.demo import (CSV_COLUMNS, ROADS, TIMES, WEATHERS, demo_label_counts, generate_demo_images,
                           scene_labels)
from curation.taxonomy import DEFAULT_CLASSES


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_images(tmp_path_factory.mktemp("demo_a"))


def _rows(labels_csv: Path) -> list[dict[str, str]]:
    with labels_csv.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_class_names_match_taxonomy() -> None:
    assert (TIMES, WEATHERS, ROADS) == (DEFAULT_CLASSES["time"], DEFAULT_CLASSES["weather"], DEFAULT_CLASSES["road"])


def test_same_seed_is_byte_identical(demo_set: Path, tmp_path: Path) -> None:
    again = generate_demo_images(tmp_path / "demo_b")
    first = sorted(p.name for p in demo_set.parent.iterdir())
    assert first == sorted(p.name for p in again.parent.iterdir())
    for name in first:
        assert (demo_set.parent / name).read_bytes() == (again.parent / name).read_bytes(), name


def test_other_seed_differs(demo_set: Path, tmp_path: Path) -> None:
    other = generate_demo_images(tmp_path / "seed1", count=3, seed=1)
    assert (other.parent / "demo_000.jpg").read_bytes() != (demo_set.parent / "demo_000.jpg").read_bytes()
    assert _rows(other) == _rows(demo_set)[:3]  # labels follow the index cycle, pixels follow the seed


def test_count_and_formats(demo_set: Path) -> None:
    images = sorted(p for p in demo_set.parent.iterdir() if p.name != "labels.csv")
    assert len(images) == 72
    assert demo_set.name == "labels.csv"
    pngs = [p for p in images if p.suffix == ".png"]
    assert len(pngs) == 8 and len(images) - len(pngs) == sum(p.suffix == ".jpg" for p in images)
    for path in images:
        with Image.open(path) as im:
            assert im.format == ("PNG" if path.suffix == ".png" else "JPEG")
            assert "exif" not in im.info


def test_every_class_is_covered(demo_set: Path) -> None:
    counts = demo_label_counts(demo_set)
    assert set(counts) == {"time", "weather", "road", "location"}
    for category, minimum in (("time", 6), ("weather", 6), ("road", 6)):
        assert set(counts[category]) == set(DEFAULT_CLASSES[category])
        assert all(n >= minimum for n in counts[category].values()), counts[category]
        assert sum(counts[category].values()) == 72
    assert 4 <= counts["location"]["inside"] <= 8
    assert counts["location"]["outside"] == 72 - counts["location"]["inside"]


def test_tunnels_vary_in_time_and_road() -> None:
    tunnels = [scene_labels(i) for i in range(72) if scene_labels(i)["location"] == "inside"]
    assert {t["time"] for t in tunnels} == set(TIMES)
    assert {t["road"] for t in tunnels} == set(ROADS)


def test_labels_match_files_and_images_decode(demo_set: Path) -> None:
    with demo_set.open(encoding="utf-8") as fh:
        assert fh.readline().strip() == ",".join(CSV_COLUMNS)
    rows = _rows(demo_set)
    written = {p.name for p in demo_set.parent.iterdir() if p.name != "labels.csv"}
    assert [r["file"] for r in rows] == sorted(written)
    for i, row in enumerate(rows):
        assert {k: row[k] for k in CSV_COLUMNS[1:]} == scene_labels(i)
        with Image.open(demo_set.parent / row["file"]) as im:
            im.load()
            assert im.size == (640, 360) and im.mode == "RGB"


def test_requested_size_and_small_count(tmp_path: Path) -> None:
    labels_csv = generate_demo_images(tmp_path, count=5, seed=3, size=(321, 200))
    rows = _rows(labels_csv)
    assert len(rows) == 5
    for row in rows:
        with Image.open(tmp_path / row["file"]) as im:
            assert im.size == (321, 200)


def test_scenes_look_different(demo_set: Path) -> None:
    day = np.asarray(Image.open(demo_set.parent / "demo_000.jpg"), dtype=float)
    night = np.asarray(Image.open(demo_set.parent / "demo_002.jpg"), dtype=float)
    assert day.mean() > night.mean() + 40  # night is much darker than day
    assert np.abs(day - np.asarray(Image.open(demo_set.parent / "demo_030.jpg"), dtype=float)).mean() > 5
