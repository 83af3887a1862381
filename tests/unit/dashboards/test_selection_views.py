"""The embedding view's 2D projection, region and hover wiring, server-side (the browser side is
tests/browser/test_viewer_selection.py)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curation.viewer.region import Region
from curation.dashboards.embedding_view import EmbeddingView, build_figure, build_projection
from curation.dashboards.filters_view import summary_html
from curation.dashboards.gallery_view import GalleryView
from curation.dashboards.store import DataStore
from tests.browser.dataset_builder import build_dataset


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> DataStore:
    root: Path = tmp_path_factory.mktemp("views")
    store = DataStore(root)
    store.open(build_dataset(root, 60, "views", seed=6))
    return store


def test_projection_draws_the_region_and_greys_what_is_outside(opened: DataStore) -> None:
    images = opened.images
    box = Region("box", (float(images["x"].min()), float(images["x"].median())), (-10.0, 10.0))
    opened.region = box
    try:
        points = opened.points()
        figure = build_projection(points, "time", None, box)
        names = [t["name"] for t in figure["data"]]
        outside = figure["data"][names.index("outside the selection")]
        assert len(outside["x"]) == points.height - int(points["in_region"].sum()) > 0
        # the points outside are told apart from every class inside, None's grey included
        inside = {t["marker"]["color"] for t in figure["data"] if t["name"] != "outside the selection"}
        assert "None" in names and outside["marker"]["color"] not in inside
        assert all(t["type"] == "scattergl" and "z" not in t for t in figure["data"])
        assert figure["layout"]["dragmode"] == "lasso" and len(figure["layout"]["shapes"]) == 1
        assert sum(len(t["x"]) for t in figure["data"]) == points.height
        three_d = build_figure(points, "time", None, points.height)
        assert "outside the selection" in [t["name"] for t in three_d["data"]]
        assert all(t["type"] == "scatter3d" for t in three_d["data"])
    finally:
        opened.region = None
    assert "shapes" not in build_projection(opened.points(), "time", None, None)["layout"]


def test_a_lasso_event_sets_the_region_and_the_gallery_says_how_many(opened: DataStore) -> None:
    view, gallery = EmbeddingView(opened), GalleryView(opened)
    images = opened.images
    left, mid = float(images["x"].min()) - 1, float(images["x"].median())
    xs = [left, mid, mid, left]
    ys = [float(images["y"].min()) - 1, float(images["y"].min()) - 1, float(images["y"].max()) + 1, float(images["y"].max()) + 1]
    view._selected(type("E", (), {"new": {"selector": {"type": "lasso", "selector_state": {"xs": xs, "ys": ys}}, "points": []}})())
    try:
        assert opened.region == Region("lasso", tuple(xs), tuple(ys))
        count = opened.counts()["filtered"]
        assert 0 < count < images.height
        assert f">{count:,}</b> image" in gallery.selection.text.object and "in the lasso" in gallery.selection.text.object
        assert gallery.selection.clear.visible
        assert f"of {count:,}" in gallery.label.object
        assert "match the filters and the selection" in summary_html(opened)
        gallery.selection.clear.clicks += 1  # the Clear selection button
        assert opened.region is None and not gallery.selection.clear.visible
        lasso = {"selector": {"type": "lasso", "selector_state": {"xs": xs, "ys": ys}}, "points": []}
        view._selected(type("E", (), {"new": lasso})())
        assert opened.region is not None
        view._selected(type("E", (), {"new": None})())  # a deselect: Plotly's double-click
        assert opened.region is None and not gallery.selection.clear.visible
    finally:
        opened.region = None


def test_hover_event_fills_the_card(opened: DataStore) -> None:
    view = EmbeddingView(opened)
    image_id = opened.images["image_id"][5]
    view._hovered_point(type("E", (), {"new": {"points": [{"customdata": image_id}]}})())
    assert view.hover.preview["id"] == image_id and view.hover.preview["src"].startswith("data:image/jpeg")
    name = opened.images.filter(pl.col("image_id") == image_id)["blob_name"][0]
    assert view.hover.preview["name"] == name
