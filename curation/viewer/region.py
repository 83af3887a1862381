"""A region of the 2D projection of the layout (a box or a lasso drawn in the dashboard) and the images inside it.

The projection is the layout's first two axes (x, y). A region is tested against every image with a position, not
only the points drawn (the views draw a decimated sample): a lasso over a 1M-image dataset selects every image in
it. Pure numpy and polars, so it is tested without a browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

# A lasso drawn slowly has thousands of vertices; point-in-polygon costs a pass per edge, so longer paths are thinned
# to this many (evenly spaced along the path: at most a few screen pixels of the outline move).
MAX_VERTICES = 400


@dataclass(frozen=True)
class Region:
    """A box (xs, ys = the two bounds) or a lasso (xs, ys = the polygon's vertices) in layout coordinates."""

    kind: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "xs": list(self.xs), "ys": list(self.ys)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Region:
        return cls(str(data["type"]), tuple(map(float, data["xs"])), tuple(map(float, data["ys"])))

    def outline(self) -> tuple[list[float], list[float]]:
        """The closed outline to draw: a box's four corners or the lasso's vertices, first point repeated."""
        if self.kind == "box":
            (x0, x1), (y0, y1) = self.xs, self.ys
            return [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0]
        return [*self.xs, self.xs[0]], [*self.ys, self.ys[0]]


def region_from_selection(selected: Mapping[str, Any] | None) -> Region | None:
    """The region of a Plotly selection event (Panel's `selected_data`), or None when it has none (a click, a
    deselect) or its numbers are not finite. Box bounds are sorted; lasso paths are thinned to MAX_VERTICES."""
    selector = (selected or {}).get("selector") or {}
    state = selector.get("selector_state") or {}
    try:
        if selector.get("type") == "box":
            xs, ys = sorted(map(float, state["xrange"])), sorted(map(float, state["yrange"]))
            if len(xs) != 2 or len(ys) != 2:
                return None
        elif selector.get("type") == "lasso":
            xs, ys = [float(v) for v in state["xs"]], [float(v) for v in state["ys"]]
            if len(xs) != len(ys) or len(xs) < 3:
                return None
            if len(xs) > MAX_VERTICES:
                keep = np.linspace(0, len(xs) - 1, MAX_VERTICES).round().astype(int)
                xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        return None
    return Region(selector["type"], tuple(xs), tuple(ys))


def region_to_query(region: Region) -> str:
    """The region in a URL: `box:x0,x1,y0,y1` or `lasso:x,y;x,y;...`, each number the shortest text that reads back
    as the same float, so a link selects exactly the same images."""
    if region.kind == "box":
        return "box:" + ",".join(repr(float(v)) for v in (*region.xs, *region.ys))
    return "lasso:" + ";".join(f"{float(x)!r},{float(y)!r}" for x, y in zip(region.xs, region.ys, strict=True))


def region_from_query(text: str) -> Region:
    """`region_to_query`'s text read back; raises ValueError for anything else (a box needs 4 finite numbers, a
    lasso 3 to MAX_VERTICES finite pairs)."""
    kind, _, body = text.partition(":")
    if kind == "box":
        values = [float(v) for v in body.split(",")]
        if len(values) != 4:
            raise ValueError("a box has 4 numbers")
        xs, ys = sorted(values[:2]), sorted(values[2:])
    elif kind == "lasso":
        pairs = [pair.split(",") for pair in body.split(";")]
        if any(len(pair) != 2 for pair in pairs) or not 3 <= len(pairs) <= MAX_VERTICES:
            raise ValueError(f"a lasso has 3 to {MAX_VERTICES} x,y pairs")
        xs, ys = [float(x) for x, _ in pairs], [float(y) for _, y in pairs]
    else:
        raise ValueError("a region is box:... or lasso:...")
    if not all(math.isfinite(v) for v in (*xs, *ys)):
        raise ValueError("a region's numbers are finite")
    return Region(kind, tuple(xs), tuple(ys))


def inside(x: np.ndarray, y: np.ndarray, region: Region) -> np.ndarray:
    """Whether each point (x, y) lies in the region: a box includes its edges; a lasso follows the even-odd rule,
    as Plotly's own lasso does. NaN coordinates are outside."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    px, py = np.asarray(region.xs), np.asarray(region.ys)
    result = (x >= px.min()) & (x <= px.max()) & (y >= py.min()) & (y <= py.max())  # the bounding box; NaN: False
    if region.kind == "box":
        return result
    candidates = np.flatnonzero(result)
    cx, cy = x[candidates], y[candidates]
    odd = np.zeros(candidates.size, dtype=bool)
    for x0, y0, x1, y1 in zip(px, py, np.roll(px, -1), np.roll(py, -1), strict=True):
        if y0 == y1:
            continue  # a horizontal edge never crosses the ray
        crosses = (y0 > cy) != (y1 > cy)
        odd ^= crosses & (cx < x0 + (cy - y0) * (x1 - x0) / (y1 - y0))
    result[candidates] = odd
    return result


def region_mask(frame: pl.DataFrame, region: Region | None) -> pl.Series:
    """`frame`'s rows inside the region (every row without a region; none without an x, y position)."""
    if region is None:
        return pl.Series("in_region", np.ones(frame.height, dtype=bool))
    if "x" not in frame.columns or "y" not in frame.columns:
        return pl.Series("in_region", np.zeros(frame.height, dtype=bool))
    x = frame["x"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    y = frame["y"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return pl.Series("in_region", inside(x, y, region))
