"""Per-category distribution bars: the filtered images (full) next to the sample at the current level."""

from __future__ import annotations

from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the backend the options below are for)
import panel as pn
import polars as pl

from curation.taxonomy import CATEGORIES
from curation.viewer.data import class_label
from curation.dashboards.components import LazyView, html_pane, message
from curation.dashboards.store import DataStore


def distribution_plots(dist: pl.DataFrame, pct: int) -> hv.Layout:
    """Grouped bars (share of images) per category: full vs sample side by side."""
    plots = []
    top = max(float(dist["full_share"].max() or 0), float(dist["sample_share"].max() or 0), 0.05)
    for i, category in enumerate(CATEGORIES):
        rows = dist.filter(pl.col("category") == category)
        names = [class_label(c) for c in rows["class"]]
        data = [(c, "full", f) for c, f in zip(names, rows["full_share"], strict=True)]
        data += [(c, f"sample {pct}%", s) for c, s in zip(names, rows["sample_share"], strict=True)]
        bars = hv.Bars(data, kdims=["class", "set"], vdims=["share"]).opts(
            title=category.capitalize(), ylabel="share of images", xlabel="", height=240, responsive=True,
            ylim=(0, min(1.0, top * 1.3)), color="set", cmap=["#1f77b4", "#ff7f0e"], tools=["hover"],
            multi_level=False, legend_position="top_right", show_legend=i == 0,
        )
        plots.append(bars)
    return hv.Layout(plots).cols(2).opts(shared_axes=False, toolbar=None)


class DistributionView(LazyView):
    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.pane = pn.pane.HoloViews(None, sizing_mode="stretch_width", backend="bokeh", css_classes=["distribution-plot"])
        self.note = html_pane("", sizing_mode="stretch_width")
        store.param.watch(self._invalidate, ["dataset_id", "selections", "fraction", "region"])
        self.panel = pn.Column(self.note, self.pane, sizing_mode="stretch_width")

    def _render(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            return
        self._stale = False
        try:
            dist = self.store.distribution()
            plots = distribution_plots(dist, round(self.store.fraction * 100))
        except Exception as exc:
            self.note.object = message(f"Cannot compute the distribution: {exc}", "error")
            return
        pct = round(self.store.fraction * 100)
        self.note.object = message(
            f"Share of each class among the {self.store.filtered.height:,} filtered images (full) and among those "
            f"kept in the {pct}% sample.", "info")
        self.pane.object = plots
