"""The DataStore on a small written dataset: sampling by joined keep_rank, lean filtered frame, capped 3D points."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

import curation.dashboards.store as store_module
from curation.dataset.catalog import Catalog, Table
from curation.sampling.order import sample_ids
from curation.dashboards.store import VIEW_COLUMNS, DataStore
from tests.browser.dataset_builder import build_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("store")
    return root, build_dataset(root, 40, "store")


def test_sampling_filters_and_points(dataset: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    root, dataset_id = dataset
    store = DataStore(root)
    store.open(dataset_id)
    sampling = Catalog(root).dataset(dataset_id).frame(Table.SAMPLING)

    store.fraction = 0.4
    kept = set(store.filtered.filter("kept")["image_id"])
    assert kept == set(sample_ids(sampling, 0.4)) and len(kept) == 16  # round(0.4 * 40)
    assert store.counts() == {"total": 40, "filtered": 40, "kept": 16, "matching": 40}

    store.selections = {**store.selections, "time": ["day"]}
    day = set(store.images.filter(pl.col("time") == "day")["image_id"])
    assert set(store.filtered["image_id"]) == day and 0 < len(day) < 40
    assert set(store.filtered.columns) <= {*VIEW_COLUMNS, "in_region"}  # filtering never copies the list columns
    assert store.counts()["kept"] == len(day & kept)

    # the full frame still serves the quick file view (similar images live in list columns)
    image_id = store.filtered["image_id"][0]
    details = store.details(image_id)
    assert details is not None and details["similar_items"]

    monkeypatch.setattr(store_module, "MAX_POINTS", 5)
    store.selections = {}
    store.selected_image = image_id
    points = store.points()
    assert points.height == 5 or (points.height == 6 and image_id in set(points["image_id"]))
    assert image_id in set(points["image_id"])
