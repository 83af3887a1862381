"""The 3D embedding view: WebGL scatter3d of the (decimated) filtered images."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import polars as pl

from curation.dataset.tags import NONE_LABEL
from curation.taxonomy import CATEGORIES
from curation.viewer.data import class_label, class_options, thumbnail_data_uri
from curation.dashboards.components import LazyView, ScriptLoader, button, esc, html_pane, message
from curation.dashboards.store import MAX_POINTS, DataStore

# No red here: red means "excluded by sampling".
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#bcbd22")
NONE_COLOUR = "#9e9e9e"
EXCLUDED_COLOUR = "#d62728"
PANEL_STATIC = "static/extensions/panel/"


def plotly_bundle() -> str:
    """Panel's bundled plotly.js, relative to Panel's static folder (the ScriptLoader's `src`)."""
    from panel.models.plotly import PlotlyPlot

    js = next(u for u in PlotlyPlot.__javascript__ if "plotly" in u.rsplit("/", 1)[-1])
    return js.split(PANEL_STATIC, 1)[-1]


def _trace(frame: pl.DataFrame, name: str, marker: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "scatter3d", "mode": "markers", "name": name,
        "x": frame["x"].to_numpy(), "y": frame["y"].to_numpy(), "z": frame["z"].to_numpy(),
        "customdata": frame["image_id"].to_list(),
        "text": [n.rsplit("/", 1)[-1] for n in frame["blob_name"].to_list()],
        "hovertemplate": "%{text}<extra>%{fullData.name}</extra>",
        "marker": {"size": 3, **marker},
    }


def build_figure(points: pl.DataFrame, colour_by: str, selected: str | None, total: int) -> dict[str, Any]:
    """A plotly figure dict: one trace per class (or a colour scale), excluded points red, selection ringed."""
    kept, excluded = points.filter(pl.col("kept")), points.filter(~pl.col("kept"))
    traces = []
    if colour_by in CATEGORIES:
        labels = kept[colour_by].fill_null(NONE_LABEL)
        for i, cls in enumerate(class_options()[colour_by]):
            rows = kept.filter(labels == cls)
            if rows.height:
                colour = NONE_COLOUR if cls == NONE_LABEL else PALETTE[i % len(PALETTE)]
                traces.append(_trace(rows, class_label(cls), {"color": colour}))
    else:
        score = kept["anomaly_score"].fill_null(0.0).to_numpy() if "anomaly_score" in kept.columns else np.zeros(kept.height)
        traces.append(_trace(kept, "anomaly score", {"color": score, "colorscale": "Viridis", "cmin": 0, "cmax": 1,
                                                     "colorbar": {"title": {"text": "anomaly"}, "thickness": 12}}))
    if excluded.height:
        traces.append(_trace(excluded, "excluded by sampling", {"color": EXCLUDED_COLOUR, "opacity": 0.6}))
    if selected:
        rows = points.filter(pl.col("image_id") == selected)
        if rows.height:
            traces.append(_trace(rows, "selected", {"size": 10, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 3}}))
    shown = points.height
    title = f"{shown:,} points" + (f" (of {total:,}, decimated)" if total > shown else "")
    axis = {"showticklabels": False, "title": {"text": ""}}
    return {
        "data": traces,
        "layout": {
            "title": {"text": title, "font": {"size": 13}, "x": 0.01},
            "margin": {"l": 0, "r": 0, "t": 30, "b": 0},
            "scene": {"xaxis": axis, "yaxis": axis, "zaxis": axis},
            "legend": {"itemsizing": "constant", "x": 0, "y": 0.95},
            "uirevision": "keep-camera",
            "hovermode": "closest",
        },
    }


class EmbeddingView(LazyView):
    """3D scatter coloured by a category or the anomaly score; hover previews, click opens the QFV.

    The Plotly pane is built only when the tab is first shown, after a ScriptLoader has put plotly.js into the page:
    the first page does not carry Plotly's 4.7 MB.
    """

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.colour = pn.widgets.Select(
            name="Colour by", options={**{c.capitalize(): c for c in CATEGORIES}, "Anomaly score": "anomaly_score"},
            value="time", width=180,
        )
        self.plot: pn.pane.Plotly | None = None
        self.loader: ScriptLoader | None = None
        self._figure: dict[str, Any] | None = None
        self.plot_area = pn.Column(sizing_mode="stretch_width", min_height=540)
        self.hover = html_pane("", width=260, height=64, css_classes=["hover-preview"])
        self.note = html_pane("", sizing_mode="stretch_width")
        self._hovered: str | None = None
        self.colour.param.watch(self._render, "value")
        store.param.watch(self._invalidate, ["dataset_id", "selections", "fraction", "selected_image"])
        # The clicked point's image full size: the page wires this button to the full-size viewer
        self.open_full = button("Open full size", width=130, disabled=True, css_classes=["embedding-open-full"])
        store.param.watch(lambda e: setattr(self.open_full, "disabled", not e.new), "selected_image")
        self.panel = pn.Column(
            pn.Row(self.colour, self.open_full, self.hover, self.note, sizing_mode="stretch_width"),
            self.plot_area,
            sizing_mode="stretch_width",
        )

    def activate(self, active: bool) -> None:
        if active and self.loader is None:
            self.loader = ScriptLoader(src=plotly_bundle(), global_name="Plotly", height=40,
                                       sizing_mode="stretch_width", css_classes=["plotly-loader"])
            self.loader.param.watch(self._plotly_loaded, "loaded")
            self.loader.param.watch(self._plotly_failed, "error")
            self.plot_area.objects = [self.loader]
        super().activate(active)

    def _plotly_failed(self, event: Any) -> None:
        self.note.object = message(f"Cannot load the 3D viewer: {event.new}", "error")

    def _plotly_loaded(self, event: Any) -> None:
        if not event.new or self.plot is not None:
            return
        extensions = pn.state._extensions  # plotly.js is in the page now: say so, or Panel warns it was not loaded
        if extensions is not None and "plotly" not in extensions:
            extensions.append("plotly")
        self.plot = pn.pane.Plotly(self._figure, height=540, sizing_mode="stretch_width",
                                   config={"displaylogo": False}, css_classes=["embedding-plot"])
        self.plot.param.watch(self._clicked, "click_data")
        self.plot.param.watch(self._hovered_point, "hover_data")
        self.plot_area.objects = [self.plot]

    def _show(self, figure: dict[str, Any] | None) -> None:
        self._figure = figure
        if self.plot is not None:
            self.plot.object = figure

    def _render(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            return
        self._stale = False
        try:
            points = self.store.points()
        except Exception as exc:
            self.note.object = message(f"Cannot draw the embedding: {exc}", "error")
            return
        if points.is_empty():
            self._show(None)
            self.note.object = message("No 3D layout for these images (no embeddings, or nothing matches).", "info")
            return
        total = self.store.filtered.filter(pl.col("x").is_not_null()).height if "x" in self.store.filtered.columns else 0
        self.note.object = "" if total <= MAX_POINTS else message(f"Showing a uniform sample of {MAX_POINTS:,} points.", "info")
        self._show(build_figure(points, self.colour.value, self.store.selected_image, total))

    @staticmethod
    def _point_id(data: dict | None) -> str | None:
        points = (data or {}).get("points") or []
        image_id = points[0].get("customdata") if points else None
        return image_id if isinstance(image_id, str) else None

    def _clicked(self, event: Any) -> None:
        image_id = self._point_id(event.new)
        if image_id:
            self.store.selected_image = image_id

    def _hovered_point(self, event: Any) -> None:
        image_id = self._point_id(event.new)
        if not image_id or image_id == self._hovered:
            return
        self._hovered = image_id
        rows = self.store.images.filter(pl.col("image_id") == image_id).select("blob_name", "thumbnail")
        if rows.is_empty():
            return
        name, thumb = rows.row(0)
        src = thumbnail_data_uri(self.store.catalog, thumb)
        img = f'<img src="{src}" style="height:60px;border-radius:4px">' if src else ""
        self.hover.object = (
            f'<div style="display:flex;gap:8px;align-items:center">{img}'
            f'<span style="font-size:12px;word-break:break-all">{esc(name)}</span></div>'
        )
