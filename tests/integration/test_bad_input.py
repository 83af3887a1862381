"""Hostile and unusual inputs in one dataset, from a local folder (embedded service) and from Azurite (real service).

Every blob ends as exactly one of: rejected at validation with its reason, a row with a correct result, or a row
with a clear per-image error. The dataset is Completed whatever the mix.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from PIL import Image

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.ingest.ids import image_id_for
from tests.bad_images import EXIF_STORED, bad_inputs, rejected_inputs
from tests.images import jpeg_bytes
from tests.integration.helpers import azure_config, new_container

GOOD = 31  # enough good images alone to pass validation


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    everything = {f"good/img_{i:03d}.jpg": jpeg_bytes(i) for i in range(GOOD)}
    everything |= {name: data for name, (data, _) in bad_inputs().items()}
    everything |= {name: data for name, (data, _) in rejected_inputs().items()}
    return everything


def expected_outcomes() -> dict[str, tuple]:
    outcomes: dict[str, tuple] = {f"good/img_{i:03d}.jpg": ("ok", 160, 120, "jpeg") for i in range(GOOD)}
    outcomes |= {name: exp for name, (_, exp) in bad_inputs().items()}
    return outcomes


def check_dataset(cr: Curation, dataset_id: str, blobs: dict[str, bytes]) -> None:
    expected = expected_outcomes()
    rejected = rejected_inputs()
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed", record.failure_reason
    assert record.counts.found == len(blobs) == len(expected) + len(rejected)
    assert record.counts.accepted == len(expected)
    assert record.counts.rejected == {
        "empty (0 bytes)": 1,
        "unsupported extension '.txt'": 1,
        "unsupported extension '.json'": 1,
        "unsupported extension '(none)'": 1,
    }
    n_errors = sum(exp[0] == "error" for exp in expected.values())
    assert record.counts.failed == n_errors
    assert record.counts.processed == len(expected) - n_errors

    catalog = Catalog(cr.settings.data_root)
    store = catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    # Every accepted blob exactly once, nothing else.
    assert files.height == len(expected)
    assert sorted(files["blob_name"]) == sorted(expected)
    assert files["image_id"].n_unique() == files.height
    assert store.frame(Table.METADATA).height == len(expected)
    embedded = set(store.frame(Table.EMBEDDINGS)["image_id"])

    problems = []
    for row in files.iter_rows(named=True):
        name, exp = row["blob_name"], expected[row["blob_name"]]
        assert row["image_id"] == image_id_for(name)
        assert row["size"] == len(blobs[name])
        if exp[0] == "ok":
            got = (row["error"], row["width"], row["height"], row["format"])
            if got != (None, *exp[1:]):
                problems.append(f"{name}: expected {(None, *exp[1:])}, got {got}")
                continue
            assert row["thumbnail"] == store.relative(store.thumbnail_path(row["image_id"])), name  # its own dataset's
            thumb = catalog.resolve(row["thumbnail"])
            assert thumb.is_file(), (name, thumb)
            with Image.open(thumb) as im:
                assert max(im.size) <= cr.settings.thumbnail_size and min(im.size) >= 1
            assert row["image_id"] in embedded, name
        else:
            if not row["error"] or exp[1] not in row["error"]:
                problems.append(f"{name}: expected an error with {exp[1]!r}, got {row['error']!r}")
            assert row["thumbnail"] is None and row["width"] is None and row["image_id"] not in embedded
    assert not problems, "\n".join(problems)

    # EXIF orientation 6: stored 200x100, shown (and recorded) as 100x200; the thumbnail is rotated too.
    exif_row = files.filter(pl.col("blob_name") == "bad/exif_rotated.jpg").row(0, named=True)
    assert (exif_row["width"], exif_row["height"]) == EXIF_STORED[::-1]
    with Image.open(catalog.resolve(exif_row["thumbnail"])) as im:
        assert im.size[0] < im.size[1]
        pixels = np.asarray(im.convert("RGB"), dtype=int)
    top, bottom = pixels[: pixels.shape[0] // 4].mean(axis=(0, 1)), pixels[-pixels.shape[0] // 4 :].mean(axis=(0, 1))
    assert top[0] > 200 and top[2] < 60, top  # red on top: rotated clockwise
    assert bottom[2] > 200 and bottom[0] < 60, bottom

    # 16-bit grayscale: a dark-to-bright ramp must stay a ramp (not clipped to white).
    deep = files.filter(pl.col("blob_name") == "bad/sixteen_bit.png").row(0, named=True)
    with Image.open(catalog.resolve(deep["thumbnail"])) as im:
        gray = np.asarray(im.convert("L"), dtype=float)
    assert gray[:5].mean() < 60 and gray[-5:].mean() > 190, (gray[:5].mean(), gray[-5:].mean())

    # The export carries the same per-image outcome: tags for successes, an error and None tags otherwise.
    export = cr.export_dataset(dataset_id)
    assert len(export["images"]) == len(expected)
    by_name = {img["blob_name"]: img for img in export["images"]}
    assert set(by_name) == set(expected)
    for name, img in by_name.items():
        if expected[name][0] == "ok":
            assert img["error"] is None and all(t["confidence"] is not None for t in img["tags"].values()), name
        else:
            assert img["error"] and all(t["label"] is None for t in img["tags"].values()), name


def test_bad_inputs_from_a_local_folder(tmp_path, settings, blobs):
    folder = tmp_path / "images"
    for name, data in blobs.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("bad input (local)", LocalStorageConfig(path=folder), wait=True)
    check_dataset(cr, dataset_id, blobs)


def test_bad_inputs_from_azurite(azurite, settings, blobs):
    container = new_container(azurite)
    for name, data in blobs.items():
        container.upload_blob(name, data, overwrite=True)
    assert sorted(b.name for b in container.list_blobs()) == sorted(blobs)  # the names survived upload as is
    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset("bad input (azure)", azure_config(azurite, container), wait=True)
    check_dataset(cr, dataset_id, blobs)
