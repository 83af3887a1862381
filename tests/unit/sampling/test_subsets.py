"""Sampling a stored dataset and saving selections as derived datasets."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.dataset.catalog import Catalog, DatasetStore, Document, Table
from curation.dataset.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table
from curation.dataset.registry import Status
from curation.dataset.results import write_embeddings
from curation.sampling.subsets import sample_dataset, save_subset, selected_ids


@pytest.fixture()
def dataset(tmp_path):
    """A Completed dataset of 50 images written the way the pipeline writes it."""
    rng = np.random.default_rng(0)
    catalog = Catalog(tmp_path)
    store = catalog.dataset(catalog.register("source").id)
    ids = [f"img{i:03d}" for i in range(50)]
    times = ["day"] * 30 + ["night"] * 15 + [None] * 5
    files = [{"image_id": i, "blob_name": f"{i}.jpg", "size": 10, "width": 4, "height": 3, "format": "jpeg",
              "thumbnail": None, "error": None} for i in ids]
    meta = [{"image_id": i, "time": t, "time_confidence": 0.9, "weather": "clear", "weather_confidence": 0.8,
             "road": "city" if k % 2 else "highway", "road_confidence": 0.7, "location": "outside",
             "location_confidence": 0.9} for k, (i, t) in enumerate(zip(ids, times))]
    store.write(Table.FILES, rows_to_table(files, FILES_SCHEMA))
    store.write(Table.METADATA, rows_to_table(meta, metadata_schema()))
    write_embeddings(store, ids, rng.normal(size=(50, 8)).astype(np.float32))
    store.update_record(status=Status.COMPLETED)
    return store


def test_sample_dataset_writes_a_nested_order_and_a_report(dataset: DatasetStore):
    report = sample_dataset(dataset)
    sampling = dataset.frame(Table.SAMPLING)
    assert sorted(sampling["keep_rank"]) == list(range(50))
    twenty = set(selected_ids(dataset, 0.2))
    forty = set(selected_ids(dataset, 0.4))
    assert len(twenty) == 10 and len(forty) == 20 and twenty < forty
    assert report["images"] == 50 and dataset.read_json(Document.SAMPLING_REPORT)["seed"] == 0
    # 60% day, 30% night, 10% None: the 20% sample keeps 6, 3 and 1
    kept = dataset.frame(Table.METADATA).filter(pl.col("image_id").is_in(list(twenty)))
    assert kept["time"].fill_null("None").value_counts().sort("time").rows() == [("None", 1), ("day", 6), ("night", 3)]


def test_filters_are_or_within_and_across_categories(dataset: DatasetStore):
    sample_dataset(dataset)
    night_or_none = selected_ids(dataset, 1.0, {"time": ["night", None]})
    assert len(night_or_none) == 20
    both = selected_ids(dataset, 1.0, {"time": ["night", None], "road": ["city"]})
    assert 0 < len(both) < 20
    # "None", as the viewer and the CLI spell the null tag, selects the same images as None
    assert selected_ids(dataset, 1.0, {"time": ["night", "None"]}) == night_or_none
    assert len(selected_ids(dataset, 1.0, {"time": ["None"]})) == 5
    with pytest.raises(ValueError, match="tme"):
        selected_ids(dataset, 1.0, {"tme": ["day"]})


def test_save_subset_registers_a_derived_dataset(dataset: DatasetStore):
    sample_dataset(dataset)
    record = save_subset(dataset, "night subset", fraction=1.0, filters={"time": ["night"]})
    assert record.original_dataset == dataset.dataset_id and record.status == Status.COMPLETED
    assert record.counts.accepted == 15 and record.counts.processed == 15 and record.counts.failed == 0
    derived = Catalog(dataset.root).dataset(record.id)
    assert derived.load_record() == record
    assert derived.frame(Table.FILES).height == 15 == derived.frame(Table.METADATA).height
    assert derived.frame(Table.EMBEDDINGS).height == 15 and not derived.has(Table.ANALYTICS)
    assert derived.frame(Table.SAMPLING).height == 15
    assert derived.read_json(Document.SELECTION)["filters"] == {"time": ["night"]}
    assert derived.read_json(Document.SAMPLING_REPORT)["dataset_id"] == record.id
    with pytest.raises(ValueError, match="empty"):
        save_subset(dataset, "nothing", filters={"time": ["dawn_dusk"]})


def test_save_subset_refuses_a_dataset_that_is_not_completed(dataset: DatasetStore):
    sample_dataset(dataset)
    dataset.update_record(status=Status.PROCESSING)
    with pytest.raises(ValueError, match="is Processing; only Completed datasets can be sampled"):
        save_subset(dataset, "too early")
    assert [r.id for r in Catalog(dataset.root).records()] == [dataset.dataset_id]
