"""Sampling a stored dataset and saving selections as derived datasets."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from curation import registry
from curation.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table, write_table
from curation.paths import dataset_paths
from curation.registry import Status
from curation.results import write_embeddings
from curation.subsets import sample_dataset, save_subset, selected_ids


@pytest.fixture()
def dataset(tmp_path):
    """A Completed dataset of 50 images written the way the pipeline writes it."""
    rng = np.random.default_rng(0)
    record = registry.register(tmp_path, "source")
    paths = dataset_paths(tmp_path, record.id)
    ids = [f"img{i:03d}" for i in range(50)]
    times = ["day"] * 30 + ["night"] * 15 + [None] * 5
    files = [{"image_id": i, "blob_name": f"{i}.jpg", "size": 10, "width": 4, "height": 3, "format": "jpeg",
              "thumbnail": None, "error": None} for i in ids]
    meta = [{"image_id": i, "time": t, "time_confidence": 0.9, "weather": "clear", "weather_confidence": 0.8,
             "road": "city" if k % 2 else "highway", "road_confidence": 0.7, "location": "outside",
             "location_confidence": 0.9} for k, (i, t) in enumerate(zip(ids, times))]
    write_table(paths.files, rows_to_table(files, FILES_SCHEMA))
    write_table(paths.metadata, rows_to_table(meta, metadata_schema()))
    write_embeddings(paths, ids, rng.normal(size=(50, 8)).astype(np.float32))
    registry.update(tmp_path, record.id, status=Status.COMPLETED)
    return tmp_path, record.id


def test_sample_dataset_writes_a_nested_order_and_a_report(dataset):
    root, dataset_id = dataset
    report = sample_dataset(root, dataset_id)
    sampling = pl.read_parquet(dataset_paths(root, dataset_id).sampling)
    assert sorted(sampling["keep_rank"]) == list(range(50))
    twenty = set(selected_ids(root, dataset_id, 0.2))
    forty = set(selected_ids(root, dataset_id, 0.4))
    assert len(twenty) == 10 and len(forty) == 20 and twenty < forty
    assert report["images"] == 50 and json.loads(dataset_paths(root, dataset_id).sampling_report.read_text())["seed"] == 0
    # 60% day, 30% night, 10% None: the 20% sample keeps 6, 3 and 1
    kept = pl.read_parquet(dataset_paths(root, dataset_id).metadata).filter(pl.col("image_id").is_in(list(twenty)))
    assert kept["time"].fill_null("None").value_counts().sort("time").rows() == [("None", 1), ("day", 6), ("night", 3)]


def test_filters_are_or_within_and_across_categories(dataset):
    root, dataset_id = dataset
    sample_dataset(root, dataset_id)
    night_or_none = selected_ids(root, dataset_id, 1.0, {"time": ["night", None]})
    assert len(night_or_none) == 20
    both = selected_ids(root, dataset_id, 1.0, {"time": ["night", None], "road": ["city"]})
    assert 0 < len(both) < 20


def test_save_subset_registers_a_derived_dataset(dataset):
    root, dataset_id = dataset
    sample_dataset(root, dataset_id)
    record = save_subset(root, dataset_id, "night subset", fraction=1.0, filters={"time": ["night"]})
    assert record.original_dataset == dataset_id and record.status == Status.COMPLETED
    derived = dataset_paths(root, record.id)
    assert pl.read_parquet(derived.files).height == 15 == pl.read_parquet(derived.metadata).height
    assert pl.read_parquet(derived.sampling).height == 15
    assert json.loads(derived.selection.read_text())["filters"] == {"time": ["night"]}
    with pytest.raises(ValueError, match="empty"):
        save_subset(root, dataset_id, "nothing", filters={"time": ["dawn_dusk"]})
