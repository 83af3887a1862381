"""The heads' training script on a small folder of real labelled photos: it writes heads that load and tag, and a
manifest with sources, counts and cross-validated metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from curation.inference.models.cnn import CnnModel
from curation.inference.models.heads import load_heads
from curation.inference.models.labelled import REPO, load_image
from curation.inference.models.train_heads import train

DEV = REPO.parent / "shared" / "datasets" / "real-dev"


@pytest.mark.skipif(not DEV.is_dir(), reason="needs ../shared/datasets/real-dev")
def test_training_writes_heads_that_tag_and_a_manifest(tmp_path: Path) -> None:
    rows = list(csv.DictReader(open(DEV / "labels.csv", encoding="utf-8")))
    picked: list[dict[str, str]] = []
    for t in ("day", "night", "dawn_dusk"):
        picked += [r for r in rows if r["time"] == t][:12]
    folder = tmp_path / "photos"
    (folder / "images").mkdir(parents=True)
    for r in picked:  # links, not copies: the photos stay where they are
        (folder / "images" / r["file"]).symlink_to(DEV / "images" / r["file"])
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)

    heads_file, manifest_file = tmp_path / "heads.npz", tmp_path / "heads.json"
    manifest = train([folder], heads_file, manifest_file)

    assert json.loads(manifest_file.read_text()) == manifest
    assert manifest["n_photos"] == 36 and manifest["counts"]["time"] == {"dawn_dusk": 12, "day": 12, "night": 12}
    assert manifest["sources"][0]["folder"] == "photos" and manifest["sources"][0]["source_commit"]
    time = manifest["metrics"]["time"]
    assert time["classes"] == ["dawn_dusk", "day", "night"] and 0.0 <= time["cv_accuracy"] <= 1.0
    assert time["temperature"] > 0 and time["cv_ece_calibrated"] >= 0
    assert "time" in load_heads(heads_file).heads and "road" not in load_heads(heads_file).heads  # one class only

    model = CnnModel(heads=heads_file)
    night = [r for r in picked if r["time"] == "night"][:4]
    predicted = [p.tags["time"][0] for p in model.predict([load_image(DEV / "images" / r["file"]) for r in night])]
    assert predicted.count("night") >= 3  # photos it was trained on: the head has learnt them
    assert all(p.tags["road"] == (None, 0.0) for p in model.predict([load_image(DEV / "images" / night[0]["file"])]))
