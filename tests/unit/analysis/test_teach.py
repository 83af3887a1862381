"""Teach by example: a probe per category fitted on stored embeddings re-tags the whole dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curation.analysis.teach import split_meta_model, teach
from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table
from curation.dataset.registry import DatasetNotFound, Status
from curation.dataset.results import write_embeddings
from curation.ingest.ids import image_id_for

DIM = 12
N_PER_CLASS = 10


def _dataset(root: Path) -> tuple[DatasetStore, list[str], dict[str, str]]:
    """20 images: 10 'night-like' around e0, 10 'day-like' around e1, plus one image that failed (no embedding).

    Returns the dataset's store, the blob names in order, and the true time class per image id.
    """
    catalog = Catalog(root)
    record = catalog.register("teach me", status=Status.COMPLETED,
                              meta_model="cpu-rules-v1", embedding_model="cpu-descriptor-v1")
    store = catalog.dataset(record.id)
    rng = np.random.default_rng(0)
    blobs, truth, vectors, files, meta = [], {}, [], [], []
    for i in range(2 * N_PER_CLASS):
        cls = "night" if i < N_PER_CLASS else "day"
        blob = f"drive/{cls}_{i:03d}.jpg"
        image_id = image_id_for(blob)
        v = rng.normal(0, 0.15, DIM)
        v[0 if cls == "night" else 1] += 1.0
        blobs.append(blob)
        truth[image_id] = cls
        vectors.append(v / np.linalg.norm(v))
        files.append({"image_id": image_id, "blob_name": blob, "size": 10, "width": 64, "height": 48,
                      "format": "jpeg", "thumbnail": None, "error": None})
        # Existing (base model) tags: time wrong on purpose, weather set, road below threshold.
        meta.append({"image_id": image_id, "time": "dawn_dusk", "time_confidence": 0.7, "weather": "clear",
                     "weather_confidence": 0.8, "road": None, "road_confidence": 0.4, "location": "outside",
                     "location_confidence": 0.9})
    failed = "drive/broken.jpg"
    files.append({"image_id": image_id_for(failed), "blob_name": failed, "size": 10, "width": None, "height": None,
                  "format": "jpeg", "thumbnail": None, "error": "cannot decode"})
    meta.append({"image_id": image_id_for(failed)} | {k: None for k in metadata_schema().names if k != "image_id"})
    store.write(Table.FILES, rows_to_table(files, FILES_SCHEMA))
    store.write(Table.METADATA, rows_to_table(meta, metadata_schema()))
    ids = [f["image_id"] for f in files[:-1]]
    write_embeddings(store, ids, np.asarray(vectors, dtype=np.float32))
    return store, blobs, truth


def _csv(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_teach_retags_the_whole_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store, blobs, truth = _dataset(root)
    before = store.read(Table.METADATA)
    labels = _csv(tmp_path / "labels.csv", [
        "file,time,weather",
        f"{blobs[0]},night,rainy",  # blob names ...
        f"{blobs[1]},night,",
        f"{image_id_for(blobs[2])},night,",  # ... and image ids both work
        f"{blobs[10]},day,",
        f"{blobs[11]},day,",
        f"{blobs[12]},day,",
        "not/in/the/dataset.jpg,day,",
    ])
    summary = teach(store, labels)

    assert summary["version"] == 1
    assert summary["meta_model"] == "cpu-rules-v1+probe-v1"
    assert summary["previous_meta_model"] == "cpu-rules-v1"
    assert set(summary["categories"]) == {"time"}
    time = summary["categories"]["time"]
    assert time["classes"] == ["day", "night"]
    assert time["labelled"] == {"day": 3, "night": 3}
    assert time["train_accuracy"] == 1.0
    assert "rainy=1" in summary["skipped"]["weather"]
    assert summary["skipped"]["road"] == "no labels"
    assert summary["unmatched_files"] == ["not/in/the/dataset.jpg"]
    assert summary["images"] == 21 and summary["images_without_embedding"] == 1

    meta = store.read(Table.METADATA)
    assert meta.schema == metadata_schema()
    rows = {r["image_id"]: r for r in meta.to_pylist()}
    for image_id, cls in truth.items():  # every image re-tagged, not only the six labelled ones
        assert rows[image_id]["time"] == cls
        assert rows[image_id]["time_confidence"] >= 0.6
        assert rows[image_id]["weather"] == "clear" and rows[image_id]["road"] is None  # untaught: kept
        assert rows[image_id]["location"] == "outside"
    broken = rows[image_id_for("drive/broken.jpg")]
    assert broken["time"] is None and broken["time_confidence"] is None
    assert time["tagged"] == {"None": 1, "day": 10, "night": 10}

    kept = store.read_metadata_version(0)
    assert kept.equals(before)
    assert summary["previous_metadata"] == "metadata.v0.parquet"
    assert store.load_record().meta_model == "cpu-rules-v1+probe-v1"

    # Teaching again bumps the version and keeps probe-v1's tags.
    again = teach(store, labels)
    assert again["meta_model"] == "cpu-rules-v1+probe-v2"
    assert store.read_metadata_version(1).equals(meta)
    assert store.load_record().meta_model == "cpu-rules-v1+probe-v2"


def test_threshold_turns_unsure_predictions_into_none(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store, blobs, _ = _dataset(root)
    labels = _csv(tmp_path / "labels.csv", ["file,time"] + [f"{b},night" for b in blobs[:3]]
                  + [f"{b},day" for b in blobs[10:13]])
    from curation.taxonomy import DEFAULT_TAXONOMY, Taxonomy

    picky = Taxonomy(classes=DEFAULT_TAXONOMY.classes, thresholds={**DEFAULT_TAXONOMY.thresholds, "time": 1.01})
    summary = teach(store, labels, taxonomy=picky)
    assert summary["categories"]["time"]["tagged"] == {"None": 21}
    meta = store.read(Table.METADATA).to_pylist()
    assert all(r["time"] is None for r in meta)
    assert all(r["time_confidence"] is not None for r in meta if r["image_id"] != image_id_for("drive/broken.jpg"))


def test_bad_labels_are_clear_errors(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store, blobs, _ = _dataset(root)
    before = store.table_path(Table.METADATA).read_bytes()

    unknown = _csv(tmp_path / "unknown.csv", ["file,time,weather", f"{blobs[0]},midnight,drizzle",
                                              f"{blobs[1]},night,"])
    with pytest.raises(ValueError) as info:
        teach(store, unknown)
    message = str(info.value)
    assert "midnight" in message and "day, night, dawn_dusk" in message
    assert "drizzle" in message and "clear, cloudy, rainy, foggy, snowy" in message

    no_file = _csv(tmp_path / "nofile.csv", ["image,time", f"{blobs[0]},night"])
    with pytest.raises(ValueError, match="'file' column"):
        teach(store, no_file)

    one_class = _csv(tmp_path / "one.csv", ["file,time"] + [f"{b},night" for b in blobs[:5]])
    with pytest.raises(ValueError, match="nothing to teach"):
        teach(store, one_class)

    too_few = _csv(tmp_path / "few.csv", ["file,time", f"{blobs[0]},night", f"{blobs[1]},night",
                                          f"{blobs[10]},day"])
    with pytest.raises(ValueError, match="nothing to teach"):
        teach(store, too_few)  # day has 1 < min_per_class=2

    conflict = _csv(tmp_path / "conflict.csv", ["file,time", f"{blobs[0]},night", f"{image_id_for(blobs[0])},day"])
    with pytest.raises(ValueError, match="conflicting"):
        teach(store, conflict)

    # Nothing changed on disk.
    assert store.table_path(Table.METADATA).read_bytes() == before
    assert not store.has_metadata_version(0)
    assert store.load_record().meta_model == "cpu-rules-v1"


def test_min_per_class_and_bare_file_names(tmp_path: Path) -> None:
    root = tmp_path / "data"
    store, blobs, truth = _dataset(root)
    labels = _csv(tmp_path / "labels.csv", [
        "File,Time",  # header case does not matter
        "night_000.jpg,Night",  # a bare file name (unique in the dataset) and a capitalised class word
        f"{blobs[1]},night",
        f"{blobs[10]},day",
        f"{blobs[11]},day",
        f"{blobs[12]},dawn_dusk",  # one dawn_dusk: below min_per_class, ignored
    ])
    summary = teach(store, labels, min_per_class=2)
    time = summary["categories"]["time"]
    assert time["labelled"] == {"day": 2, "night": 2}
    assert time["ignored_classes"] == {"dawn_dusk": 1}
    meta = {r["image_id"]: r["time"] for r in store.read(Table.METADATA).to_pylist()}
    assert all(meta[i] in (cls, None) for i, cls in truth.items())  # never wrong, never dawn_dusk
    assert sum(meta[i] == cls for i, cls in truth.items()) >= 15  # two labels per class: most are confident


def test_split_meta_model() -> None:
    assert split_meta_model("cpu-rules-v1") == ("cpu-rules-v1", 0)
    assert split_meta_model("clip-ViT-B-32-zeroshot+probe-v12") == ("clip-ViT-B-32-zeroshot", 12)
    assert split_meta_model(None) == ("unknown", 0)


def test_unknown_dataset(tmp_path: Path) -> None:
    labels = _csv(tmp_path / "labels.csv", ["file,time", "a.jpg,day"])
    with pytest.raises(DatasetNotFound):
        teach(Catalog(tmp_path).dataset("0" * 24), labels)
