"""The full-size viewer and deep links without a browser: ←/→ in filter order, a link applied, the URL followed."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curation.dashboards.app import CurateView, apply_link, follow_url
from curation.dashboards.store import DataStore
from curation.dataset.catalog import Table
from tests.browser.dataset_builder import build_dataset


@pytest.fixture
def opened(tmp_path: Path) -> tuple[DataStore, CurateView, str]:
    dataset_id = build_dataset(tmp_path, 20, "d", seed=3)
    originals = tmp_path / "originals"
    originals.mkdir()
    store = DataStore(tmp_path)
    store.catalog.dataset(dataset_id).update_record(storage={"kind": "local", "path": str(originals)})
    return store, CurateView(store), dataset_id


def test_arrows_walk_the_filtered_images_in_gallery_order_and_stop_at_the_ends(opened) -> None:
    store, curate, dataset_id = opened
    store.open(dataset_id)
    store.param.update(selections={**store.selections, "time": ["night"]})
    order = store.filtered["image_id"].to_list()
    assert 1 < len(order) < 20
    curate.fullsize.open(order[0])
    viewer = curate.fullsize.viewer
    assert viewer.open and viewer.image_id == order[0] and viewer.position == f"1 of {len(order)}"
    assert viewer.warn and "missing" in viewer.note and viewer.fallback.startswith("data:image/jpeg")
    viewer._handle_msg({"action": "nav", "step": 1})
    assert store.selected_image == order[1] and viewer.position == f"2 of {len(order)}"
    viewer._handle_msg({"action": "nav", "step": -1})
    viewer._handle_msg({"action": "nav", "step": -1})
    assert store.selected_image == order[0]
    curate.fullsize.open(order[-1])
    viewer._handle_msg({"action": "nav", "step": 1})
    assert store.selected_image == order[-1]
    viewer._handle_msg({"action": "nav", "step": "<script>"})  # ignored
    store.selected_image = None  # closing the quick file view closes the viewer
    assert not viewer.open


def test_a_link_opens_the_view_and_the_url_follows_it(opened) -> None:
    store, curate, dataset_id = opened
    image = store.catalog.dataset(dataset_id).frame(Table.FILES)["image_id"][4]
    assert apply_link(store, curate, f"?dataset={dataset_id}&time=day,None&fraction=0.4&image={image}&full=1") is None
    assert store.selections["time"] == ["day", "None"] and store.fraction == 0.4
    assert curate.sampling.slider.value == 40 and store.selected_image == image and curate.fullsize.is_open

    class Location:
        search = ""

    location = Location()
    follow_url(store, curate, location)
    assert location.search == f"?dataset={dataset_id}&fraction=0.4&time=day,None&image={image}&full=1"
    curate.fullsize.close()
    store.param.update(selections={**store.selections, "time": ["night"]})
    assert location.search == f"?dataset={dataset_id}&fraction=0.4&time=night&image={image}"


def test_a_bad_link_is_one_line_not_a_traceback(opened) -> None:
    store, curate, dataset_id = opened
    assert "cannot be opened" in apply_link(store, curate, "?dataset=<b>x</b>")
    assert store.dataset_id is None
    problem = apply_link(store, curate, f"?dataset={dataset_id}&image=nope&fraction=abc")
    assert store.dataset_id == dataset_id and "the image 'nope' is not in this dataset" in problem
    assert "fraction abc" in problem and "\n" not in problem
    assert store.images.filter(pl.col("image_id") == "nope").is_empty()
