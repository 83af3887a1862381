"""Tests for curation.inference.models.evaluate with typed fake backends so every number is exactly checkable."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.inference.models.evaluate import evaluate_folder, format_report
from curation.inference.models.base import ModelBackend, Prediction
from curation.taxonomy import DEFAULT_TAXONOMY

COLOURS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "black": (0, 0, 0)}


class ColourBackend:
    """Fake tagger: time from the dominant colour (red=day, green=night, blue=None, black=dawn_dusk).

    Embeddings are the normalised mean colour, so classes are linearly separable.
    """

    name = "fake-colour"
    embedding_name = "fake-mean-rgb"
    embedding_dim = 3
    mapping = {0: "day", 1: "night"}

    def predict(self, images: list[Image.Image]) -> list[Prediction]:
        out = []
        for im in images:
            m = np.asarray(im, dtype=np.float32).reshape(-1, 3).mean(0)
            if m.max() < 5:
                time: tuple[str | None, float] = ("dawn_dusk", 0.9)
            else:
                ch = int(m.argmax())
                time = (self.mapping[ch], 0.9) if ch in self.mapping else (None, 0.2)
            emb = (m + 1.0) / np.linalg.norm(m + 1.0)
            out.append(Prediction(tags={"time": time, "weather": ("foggy", 0.8),
                                        "road": (None, 0.1), "location": ("outside", 0.9)},
                                  embedding=emb.astype(np.float32)))
        return out


def _write(tmp: Path, rows: list[tuple[str, str, str]], broken: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """rows: (file, colour, time label); also writes weather=foggy for every row, road blank."""
    img_dir = tmp / "images"
    img_dir.mkdir()
    for name, colour, _ in rows:
        Image.new("RGB", (32, 24), COLOURS[colour]).save(img_dir / name)
    for name in broken:
        (img_dir / name).write_bytes(b"not an image")
    labels = tmp / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "time", "weather", "road", "location"])
        for name, _, t in rows:
            w.writerow([name, t, "foggy", "", "outside" if t else ""])
        for name in broken:
            w.writerow([name, "day", "", "", ""])
    return img_dir, labels


def test_fake_backend_satisfies_protocol() -> None:
    backend: ModelBackend = ColourBackend()
    assert backend.embedding_dim == 3


def test_zero_shot_numbers(tmp_path: Path) -> None:
    rows = [
        ("a.png", "red", "day"), ("b.png", "red", "day"), ("c.png", "green", "day"),  # 1 day->night
        ("d.png", "green", "night"), ("e.png", "blue", "night"),  # 1 night->None
        ("f.png", "black", "dawn_dusk"),
        ("g.png", "red", ""),  # blank label: skipped
    ]
    img_dir, labels = _write(tmp_path, rows, broken=("bad.jpg",))
    rep = evaluate_folder(img_dir, labels, backend=ColourBackend())
    assert rep["n_images"] == 8
    assert rep["n_unreadable"] == 1 and rep["unreadable"] == ["bad.jpg"]
    t = rep["categories"]["time"]
    assert t["n"] == 6
    assert t["accuracy"] == pytest.approx(4 / 6)
    assert t["coverage"] == pytest.approx(1 / 6)
    assert t["confusion"]["day"] == {"day": 2, "night": 1, "dawn_dusk": 0, "None": 0}
    assert t["confusion"]["night"] == {"day": 0, "night": 1, "dawn_dusk": 0, "None": 1}
    assert t["confusion"]["dawn_dusk"]["dawn_dusk"] == 1
    # F1: day 2*2/(4+0+1)=0.8; night 2*1/(2+1+1)=0.5; dawn_dusk 1.0
    assert t["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    w = rep["categories"]["weather"]
    assert (w["n"], w["accuracy"], w["macro_f1"], w["classes"]) == (7, 1.0, 1.0, ["foggy"])
    assert rep["categories"]["road"]["n"] == 0
    loc = rep["categories"]["location"]
    assert loc["n"] == 6 and loc["accuracy"] == 1.0 and loc["coverage"] == 0.0
    assert "fewshot" not in t
    text = format_report(rep)
    assert "time" in text and "unreadable=1" in text and "confusion" in text


def test_labels_outside_the_taxonomy_get_their_own_confusion_row(tmp_path: Path) -> None:
    rows = [("a.png", "red", "day"), ("b.png", "green", "dusk"), ("c.png", "blue", "day")]
    img_dir, labels = _write(tmp_path, rows)
    rep = evaluate_folder(img_dir, labels, backend=ColourBackend())
    t = rep["categories"]["time"]
    assert list(t["confusion"]) == ["day", "dusk"]
    assert t["confusion"]["day"] == {"day": 1, "night": 0, "dawn_dusk": 0, "None": 1}
    assert t["confusion"]["dusk"] == {"day": 0, "night": 1, "dawn_dusk": 0, "None": 0}
    # macro-F1 over the taxonomy classes present: day only, tp 1, fp 0, fn 1
    assert t["classes"] == ["day"] and t["macro_f1"] == pytest.approx(2 / 3)
    assert t["accuracy"] == pytest.approx(1 / 3)
    assert json.loads(json.dumps(rep))["categories"]["time"]["confusion"]["day"]["None"] == 1  # plain ints


def test_fewshot_separable_embeddings(tmp_path: Path) -> None:
    rows = [(f"r{i}.png", "red", "day") for i in range(6)]
    rows += [(f"g{i}.png", "green", "night") for i in range(6)]
    rows += [(f"k{i}.png", "black", "dawn_dusk") for i in range(2)]  # too few for k=3: skipped
    img_dir, labels = _write(tmp_path, rows)
    rep = evaluate_folder(img_dir, labels, backend=ColourBackend(), fewshot=3, seeds=4)
    fs = rep["categories"]["time"]["fewshot"]
    assert fs["classes"] == ["day", "night"]
    assert fs["skipped"] == {"dawn_dusk": 2}
    assert (fs["n_train"], fs["n_test"], fs["seeds"]) == (6, 6, 4)
    assert fs["accuracy_mean"] == 1.0 and fs["accuracy_std"] == 0.0
    assert fs["macro_f1_mean"] == 1.0
    # weather has a single class: no probe possible, reported rather than raised
    assert "error" in rep["categories"]["weather"]["fewshot"]
    text = format_report(rep)
    assert "few-shot" in text and "dawn_dusk(2)" in text


def test_default_backend_runs_on_generated_images(tmp_path: Path) -> None:
    img_dir, labels = _write(tmp_path, [("x.png", "black", "night"), ("y.jpg", "red", "day")])
    rep = evaluate_folder(img_dir, labels)
    assert rep["backend"].startswith("efficientnet-lite0-heads-")  # the CNN is the default
    assert rep["categories"]["time"]["n"] == 2
    assert set(rep["categories"]["time"]["confusion"]["night"]) == {
        *DEFAULT_TAXONOMY.classes["time"], "None"}
