"""The embedding view: a WebGL scatter3d of the (decimated) filtered images and a 2D projection to select on."""

from __future__ import annotations

from typing import Any

import numpy as np
import panel as pn
import polars as pl

from curation.dataset.tags import NONE_LABEL
from curation.taxonomy import CATEGORIES
from curation.viewer.data import class_label, class_options
from curation.viewer.region import Region, region_from_selection
from curation.dashboards.components import LazyView, ScriptLoader, button, html_pane, message
from curation.dashboards.hover_card import HoverCard
from curation.dashboards.selection_view import SelectionBar
from curation.dashboards.store import MAX_POINTS, DataStore

# No red here: red means "excluded by sampling".
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#bcbd22")
NONE_COLOUR = "#495057"  # dark grey: apart from the light grey of the points outside a selection
EXCLUDED_COLOUR = "#d62728"
PANEL_STATIC = "static/extensions/panel/"


def plotly_bundle() -> str:
    """Panel's bundled plotly.js, relative to Panel's static folder (the ScriptLoader's `src`)."""
    from panel.models.plotly import PlotlyPlot

    js = next(u for u in PlotlyPlot.__javascript__ if "plotly" in u.rsplit("/", 1)[-1])
    return js.split(PANEL_STATIC, 1)[-1]


OUTSIDE_COLOUR = "#ced4da"
REGION_COLOUR = "#0b4a7a"


def _trace(frame: pl.DataFrame, name: str, marker: dict[str, Any], kind: str = "scatter3d") -> dict[str, Any]:
    trace = {
        "type": kind, "mode": "markers", "name": name,
        "x": frame["x"].to_numpy(), "y": frame["y"].to_numpy(),
        "customdata": frame["image_id"].to_list(),
        "text": [n.rsplit("/", 1)[-1] for n in frame["blob_name"].to_list()],
        "hovertemplate": "%{text}<extra>%{fullData.name}</extra>",
        "marker": {"size": 3 if kind == "scatter3d" else 4, **marker},
    }
    if kind == "scatter3d":
        trace["z"] = frame["z"].to_numpy()
    return trace


def _traces(points: pl.DataFrame, colour_by: str, selected: str | None, kind: str) -> list[dict[str, Any]]:
    """One trace per class (or a colour scale), points outside a drawn region grey, excluded points red, the
    selected image ringed."""
    traces = []
    if "in_region" in points.columns and not points["in_region"].all():
        outside = points.filter(~pl.col("in_region"))
        traces.append(_trace(outside, "outside the selection", {"color": OUTSIDE_COLOUR, "opacity": 0.4}, kind))
        points = points.filter(pl.col("in_region"))
    kept, excluded = points.filter(pl.col("kept")), points.filter(~pl.col("kept"))
    if colour_by in CATEGORIES:
        labels = kept[colour_by].fill_null(NONE_LABEL)
        for i, cls in enumerate(class_options()[colour_by]):
            rows = kept.filter(labels == cls)
            if rows.height:
                colour = NONE_COLOUR if cls == NONE_LABEL else PALETTE[i % len(PALETTE)]
                traces.append(_trace(rows, class_label(cls), {"color": colour}, kind))
    else:
        score = kept["anomaly_score"].fill_null(0.0).to_numpy() if "anomaly_score" in kept.columns else np.zeros(kept.height)
        traces.append(_trace(kept, "anomaly score", {"color": score, "colorscale": "Viridis", "cmin": 0, "cmax": 1,
                                                     "colorbar": {"title": {"text": "anomaly"}, "thickness": 12}}, kind))
    if excluded.height:
        traces.append(_trace(excluded, "excluded by sampling", {"color": EXCLUDED_COLOUR, "opacity": 0.6}, kind))
    if selected:
        rows = points.filter(pl.col("image_id") == selected)
        if rows.height:
            ring = {"size": 10 if kind == "scatter3d" else 12, "color": "rgba(0,0,0,0)", "line": {"color": "black", "width": 3}}
            traces.append(_trace(rows, "selected", ring, kind))
    return traces


def _title(shown: int, total: int) -> dict[str, Any]:
    text = f"{shown:,} points" + (f" (of {total:,}, decimated)" if total > shown else "")
    return {"text": text, "font": {"size": 13}, "x": 0.01}


def build_figure(points: pl.DataFrame, colour_by: str, selected: str | None, total: int) -> dict[str, Any]:
    """The 3D plotly figure dict (scatter3d)."""
    axis = {"showticklabels": False, "title": {"text": ""}}
    return {
        "data": _traces(points, colour_by, selected, "scatter3d"),
        "layout": {
            "title": _title(points.height, total),
            "margin": {"l": 0, "r": 0, "t": 30, "b": 0},
            "scene": {"xaxis": axis, "yaxis": axis, "zaxis": axis},
            "legend": {"itemsizing": "constant", "x": 0, "y": 0.95},
            "uirevision": "keep-camera",
            "hovermode": "closest",
        },
    }


def build_projection(points: pl.DataFrame, colour_by: str, selected: str | None, region: Region | None) -> dict[str, Any]:
    """The 2D projection (the layout's x and y, WebGL) that box and lasso select on, with the drawn region's
    outline; same colours as the 3D figure, no legend (the 3D figure has it)."""
    axis = {"showticklabels": False, "zeroline": False, "showgrid": False, "title": {"text": ""}}
    layout: dict[str, Any] = {
        "title": {"text": "2D projection: drag to lasso, or pick the box tool", "font": {"size": 13}, "x": 0.01},
        "margin": {"l": 4, "r": 4, "t": 30, "b": 4},
        "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x"},
        "showlegend": False, "dragmode": "lasso", "hovermode": "closest", "uirevision": "keep-view",
    }
    if region is not None:
        xs, ys = region.outline()
        path = "M" + "L".join(f"{x},{y}" for x, y in zip(xs, ys, strict=True)) + "Z"
        layout["shapes"] = [{"type": "path", "path": path, "line": {"color": REGION_COLOUR, "width": 2, "dash": "dot"},
                             "fillcolor": "rgba(11,74,122,0.06)", "layer": "below"}]
    return {"data": _traces(points, colour_by, selected, "scattergl"), "layout": layout}


class EmbeddingView(LazyView):
    """The 3D scatter and, beside it, the 2D projection to lasso or box-select on, coloured by a category or the
    anomaly score. Hovering a point shows its thumbnail and tags at the cursor; a click opens it in the QFV.

    The Plotly panes are built only when the tab is first shown, after a ScriptLoader has put plotly.js into the page:
    the first page does not carry Plotly's 4.7 MB.
    """

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.colour = pn.widgets.Select(
            name="Colour by", options={**{c.capitalize(): c for c in CATEGORIES}, "Anomaly score": "anomaly_score"},
            value="time", width=180,
        )
        self.plot: pn.pane.Plotly | None = None
        self.projection: pn.pane.Plotly | None = None
        self.loader: ScriptLoader | None = None
        self._figures: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.plot_area = pn.Row(sizing_mode="stretch_width", min_height=540)
        self.hover = HoverCard(height=0, width=0, margin=0)
        self.note = html_pane("", sizing_mode="stretch_width")
        self.selection = SelectionBar(store)
        self.colour.param.watch(self._render, "value")
        store.param.watch(self._invalidate, ["dataset_id", "selections", "fraction", "selected_image", "region"])
        store.param.watch(self._region_cleared, "region")
        # The clicked point's image full size: the page wires this button to the full-size viewer
        self.open_full = button("Open full size", width=130, disabled=True, css_classes=["embedding-open-full"])
        store.param.watch(lambda e: setattr(self.open_full, "disabled", not e.new), "selected_image")
        self.panel = pn.Column(
            pn.Row(self.colour, self.open_full, self.note, self.hover, sizing_mode="stretch_width"),
            self.selection.panel,
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
        figure, projection = self._figures or (None, None)
        self.plot = pn.pane.Plotly(figure, height=540, sizing_mode="stretch_width",
                                   config={"displaylogo": False}, css_classes=["embedding-plot"])
        self.projection = pn.pane.Plotly(projection, height=540, sizing_mode="stretch_width",
                                         config={"displaylogo": False, "scrollZoom": True},
                                         css_classes=["embedding-projection"])
        for pane in (self.plot, self.projection):
            pane.param.watch(self._clicked, "click_data")
            pane.param.watch(self._hovered_point, "hover_data")
        self.projection.param.watch(self._selected, "selected_data")
        self.plot_area.objects = [self.plot, self.projection]

    def _show(self, figures: tuple[dict[str, Any], dict[str, Any]] | None) -> None:
        self._figures = figures
        if self.plot is not None and self.projection is not None:
            self.plot.object, self.projection.object = figures or (None, None)

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
        frame = self.store.tag_filtered
        total = frame.filter(pl.col("x").is_not_null()).height if "x" in frame.columns else 0
        self.note.object = "" if total <= MAX_POINTS else message(f"Showing a uniform sample of {MAX_POINTS:,} points.", "info")
        selected = self.store.selected_image
        self._show((build_figure(points, self.colour.value, selected, total),
                    build_projection(points, self.colour.value, selected, self.store.region)))

    @staticmethod
    def _point_id(data: dict | None) -> str | None:
        points = (data or {}).get("points") or []
        image_id = points[0].get("customdata") if points else None
        return image_id if isinstance(image_id, str) else None

    def _clicked(self, event: Any) -> None:
        image_id = self._point_id(event.new)
        if image_id:
            self.store.selected_image = image_id

    def _selected(self, event: Any) -> None:
        """A lasso or box drawn on the projection selects every image inside it (not only the points drawn); a
        deselect (Plotly's double-click: nothing else sends one, not a re-render nor a click) clears it, as the Clear
        selection button does."""
        if event.new is None:
            if self.store.region is not None:
                self.store.param.update(region=None, page=1)
            return
        region = region_from_selection(event.new)
        if region is not None and region != self.store.region:
            self.store.param.update(region=region, page=1)

    def _region_cleared(self, event: Any) -> None:
        """Cleared elsewhere (the button, another dataset): forget the last selection event too, so drawing the same
        lasso again selects it again."""
        if event.new is None and self.projection is not None and self.projection.selected_data is not None:
            self.projection.selected_data = None

    def _hovered_point(self, event: Any) -> None:
        image_id = self._point_id(event.new)
        if not image_id:
            return
        self.hover.show(self.store.hover_preview(image_id))
