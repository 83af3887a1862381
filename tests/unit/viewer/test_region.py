"""Issue #18 item 3, below the browser: a region drawn on the 2D projection, the images inside it, the views' frames
and counts restricted to it, its hover preview, and saving it as a derived dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.dataset.catalog import Catalog, Document, Table
from curation.viewer.region import MAX_VERTICES, Region, inside, region_from_selection, region_mask
from curation.dashboards.store import DataStore
from tests.browser.dataset_builder import build_dataset


def _event(kind: str, **state: object) -> dict[str, object]:
    """Panel's `selected_data` for a Plotly selection (panel/models/plotly.ts, filterEventData)."""
    return {"selector": {"type": kind, "selector_state": state}, "points": []}


def test_region_from_plotly_selection_events() -> None:
    box = region_from_selection(_event("box", xrange=[2.0, -1.0], yrange=[0.5, 0.0]))
    assert box == Region("box", (-1.0, 2.0), (0.0, 0.5))  # bounds sorted
    lasso = region_from_selection(_event("lasso", xs=[0, 1, 0], ys=[0, 0, 1]))
    assert lasso == Region("lasso", (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert region_from_selection(None) is None  # a deselect
    assert region_from_selection({"points": [{"x": 1}]}) is None  # a click: no selector
    assert region_from_selection(_event("lasso", xs=[0, 1], ys=[0, 0])) is None  # not a polygon
    assert region_from_selection(_event("box", xrange=["a", 1], yrange=[0, 1])) is None
    assert region_from_selection(_event("box", xrange=[float("nan"), 1], yrange=[0, 1])) is None
    long = region_from_selection(_event("lasso", xs=list(np.cos(np.linspace(0, 6, 5000))), ys=list(np.sin(np.linspace(0, 6, 5000)))))
    assert long is not None and len(long.xs) == MAX_VERTICES
    assert Region.from_dict(long.as_dict()) == long


def test_inside_box_and_lasso_even_odd() -> None:
    x = np.array([0.5, 1.5, 0.0, 0.2, 0.8, np.nan, 0.25])
    y = np.array([0.5, 0.5, 0.0, 0.7, 0.1, 0.5, 0.25])
    assert inside(x, y, Region("box", (0.0, 1.0), (0.0, 1.0))).tolist() == [True, False, True, True, True, False, True]
    triangle = Region("lasso", (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))  # below the line x + y = 1
    tx, ty = np.array([0.5, 1.5, 0.2, 0.8, np.nan, 0.25, 0.6]), np.array([0.5, 0.5, 0.7, 0.1, 0.5, 0.25, 0.6])
    assert inside(tx, ty, triangle).tolist() == [False, False, True, True, False, True, False]
    # a square with a square hole drawn as one path (even-odd, as Plotly's lasso): the hole is outside
    ring = Region("lasso", (0, 4, 4, 0, 0, 1, 1, 3, 3, 1, 1, 0), (0, 0, 4, 4, 1, 1, 3, 3, 1, 1, 0, 0))
    assert inside(np.array([2.0, 0.5, 3.5]), np.array([2.0, 2.0, 2.0]), ring).tolist() == [False, True, True]


def test_inside_agrees_with_a_brute_force_count_on_random_points() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-1, 1, 20_000), rng.uniform(-1, 1, 20_000)
    angles = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    circle = Region("lasso", tuple(0.8 * np.cos(angles)), tuple(0.8 * np.sin(angles)))
    got = inside(x, y, circle)
    # the inscribed and circumscribed circles bound the polygon: everything well inside counts, nothing outside
    r = np.hypot(x, y)
    assert got[r < 0.8 * np.cos(np.pi / 60)].all() and not got[r > 0.8].any()
    assert abs(got.mean() - 0.8 ** 2 * np.pi / 4) < 0.02


def test_region_mask_without_positions() -> None:
    frame = pl.DataFrame({"image_id": ["a", "b", "c"], "x": [0.5, None, 2.0], "y": [0.5, 0.5, 0.5]})
    box = Region("box", (0.0, 1.0), (0.0, 1.0))
    assert region_mask(frame, box).to_list() == [True, False, False]  # no position: outside
    assert region_mask(frame, None).to_list() == [True, True, True]
    assert region_mask(frame.drop("x"), box).to_list() == [False, False, False]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("region")
    return root, build_dataset(root, 80, "regions", seed=4)


def test_store_restricts_every_view_to_the_region_and_saves_it(dataset: tuple[Path, str]) -> None:
    root, dataset_id = dataset
    store = DataStore(root)
    store.open(dataset_id)
    images = store.images
    # a box over the layout's left part, through the night cluster (the builder clusters embeddings by time)
    night_x = images.filter(pl.col("time") == "night")["x"]
    box = Region("box", (float(images["x"].min()), float(night_x.median())), (float(images["y"].min()), float(images["y"].max())))
    expected = set(images.filter(pl.col("x").is_between(box.xs[0], box.xs[1]) & pl.col("y").is_between(box.ys[0], box.ys[1]))["image_id"])
    assert 0 < len(expected) < 80

    store.param.update(region=box, fraction=0.6)
    assert set(store.filtered["image_id"]) == expected
    counts = store.counts()
    assert counts["filtered"] == len(expected) and counts["matching"] == counts["total"] == 80
    assert counts["kept"] == int(store.images.filter(pl.col("image_id").is_in(list(expected)))["kept"].sum())
    assert sum(store.facet_counts()["time"].values()) == len(expected)  # facets count inside the region
    assert int(store.distribution()["full"].sum()) == 4 * len(expected)  # 4 categories, each row once
    page = {item["id"] for item in store.page_items()}
    assert page <= expected
    points = store.points()  # the plots draw every point, the region's marked
    assert points.height == 80 and set(points.filter("in_region")["image_id"]) == expected

    # a tag filter and the region intersect
    store.selections = {**store.selections, "time": ["night"]}
    night = set(images.filter(pl.col("time") == "night")["image_id"])
    assert set(store.filtered["image_id"]) == expected & night and 0 < len(expected & night) < len(night)

    record = store.save("region part")
    derived = Catalog(root).dataset(record.id)
    kept = set(store.filtered.filter("kept")["image_id"])
    assert set(derived.frame(Table.FILES)["image_id"]) == kept and record.counts.accepted == len(kept)
    selection = derived.read_json(Document.SELECTION)
    assert selection["region"] == box.as_dict() and selection["fraction"] == 0.6
    assert selection["filters"] == {"time": ["night"]}

    store.region = None
    assert store.counts()["filtered"] == len(night)
    store.open(dataset_id)  # opening (again) forgets the region
    assert store.region is None


def test_hover_preview_names_thumbnail_and_tags(dataset: tuple[Path, str]) -> None:
    root, dataset_id = dataset
    store = DataStore(root)
    store.open(dataset_id)
    row = store.images.row(3, named=True)
    preview = store.hover_preview(row["image_id"])
    assert preview["id"] == row["image_id"] and preview["name"] == row["blob_name"]
    assert preview["src"].startswith("data:image/jpeg;base64,")
    assert ["Time", "dawn/dusk" if row["time"] == "dawn_dusk" else (row["time"] or "None")] in preview["tags"]
    assert len(preview["tags"]) == 4
    assert store.hover_preview("not-an-id") is None
    store.fraction = 0.2
    excluded = store.images.filter(~pl.col("kept"))["image_id"][0]
    assert ["Sample", "excluded at this sampling level"] in store.hover_preview(excluded)["tags"]
