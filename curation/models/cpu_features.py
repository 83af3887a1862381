"""Vectorised numpy feature extraction for the weight-free CPU backend.

`extract(image)` downscales once to a fixed working size (WORK_W x WORK_H) and returns a `Features`
object with (a) a fixed-length image descriptor used as the embedding and (b) a dict of named scalar
scene statistics that the rules in `cpu.py` turn into tags. Everything is deterministic: integer
pixel input, fixed resampling filter, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

WORK_W, WORK_H = 160, 120
GRID = 4  # GRID x GRID cells for the gradient and colour-layout blocks
N_ORIENT = 8  # unsigned gradient orientation bins
HUE_BINS, SAT_BINS, VAL_BINS = 8, 3, 8
N_STATS = 8
EMBEDDING_DIM = GRID * GRID * N_ORIENT + GRID * GRID * 3 + HUE_BINS * SAT_BINS + VAL_BINS + N_STATS
# Block weights (applied after each block is L2-normalised): texture/layout dominate, stats are a hint.
BLOCK_WEIGHTS = {"grad": 1.0, "layout": 1.0, "hs": 0.7, "v": 0.5, "stats": 0.35}
_EPS = 1e-6


@dataclass(frozen=True)
class Features:
    embedding: np.ndarray  # float32, (EMBEDDING_DIM,), L2-normalised
    stats: dict[str, float]


def to_working_arrays(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, HSV) float32 arrays in [0, 1] of shape (WORK_H, WORK_W, 3); one resampling step."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    small = image.resize((WORK_W, WORK_H), Image.Resampling.BILINEAR, reducing_gap=2.0)
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    hsv = np.asarray(small.convert("HSV"), dtype=np.float32) / 255.0  # Pillow's C conversion is fast
    return rgb, hsv


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k x k window (edge-padded) using an integral image."""
    r = k // 2
    p = np.pad(x, r + 1, mode="edge")
    c = p.cumsum(0).cumsum(1)
    h, w = x.shape
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / (k * k)


def _min_filter(x: np.ndarray, k: int) -> np.ndarray:
    """Separable k x k minimum filter (edge-padded)."""
    r = k // 2
    h, w = x.shape
    p = np.pad(x, ((0, 0), (r, r)), mode="edge")
    m = p[:, :w].copy()
    for i in range(1, k):
        np.minimum(m, p[:, i:i + w], out=m)
    p = np.pad(m, ((r, r), (0, 0)), mode="edge")
    out = p[:h].copy()
    for i in range(1, k):
        np.minimum(out, p[i:i + h], out=out)
    return out


@lru_cache(maxsize=8)
def _cell_index(h: int, w: int) -> np.ndarray:
    rows = np.minimum(np.arange(h) * GRID // h, GRID - 1)
    cols = np.minimum(np.arange(w) * GRID // w, GRID - 1)
    cells = rows[:, None] * GRID + cols[None, :]
    cells.flags.writeable = False  # cached and shared between calls
    return cells


# Orientation bin edges k * pi / N_ORIENT (k = 1 .. N_ORIENT - 1) as (cos, sin) pairs, for _orientation_bins.
_EDGE_COS = np.cos(np.arange(1, N_ORIENT) * np.pi / N_ORIENT).astype(np.float32)
_EDGE_SIN = np.sin(np.arange(1, N_ORIENT) * np.pi / N_ORIENT).astype(np.float32)


def _orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Bin of the unsigned gradient direction (arctan2(gy, gx) mod pi) among N_ORIENT equal bins, without arctan2.

    The direction is folded into [0, pi) (gy > 0, or gy == 0 and gx >= 0); it lies past edge k exactly when the
    cross product gy * cos(edge) - gx * sin(edge) is >= 0, so the bin is the number of edges it is past.
    Several times faster than arctan2 and the same bins up to float rounding on an exact edge.
    """
    flip = (gy < 0) | ((gy == 0) & (gx < 0))
    fx = np.where(flip, -gx, gx)
    fy = np.where(flip, -gy, gy)
    obin = np.zeros(gx.shape, dtype=np.int64)
    for c, s in zip(_EDGE_COS, _EDGE_SIN, strict=True):
        obin += fy * c - fx * s >= 0
    obin[(gx == 0) & (gy == 0)] = 0  # arctan2(0, 0) = 0
    return obin


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + _EPS)


def _frac(mask: np.ndarray) -> float:
    """Share of True in a boolean mask (the same value as mask.mean(), a few times faster)."""
    return np.count_nonzero(mask) / mask.size if mask.size else float("nan")


def extract(image: Image.Image) -> Features:
    """The embedding and the named scene statistics of one image (any size; any mode, converted to RGB)."""
    rgb, hsv = to_working_arrays(image)
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    red, blue = rgb[..., 0], rgb[..., 2]

    # Central-difference gradients on luminance.
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    np.subtract(lum[:, 2:], lum[:, :-2], out=gx[:, 1:-1])
    np.subtract(lum[2:, :], lum[:-2, :], out=gy[1:-1, :])
    mag = np.hypot(gx, gy)
    obin = _orientation_bins(gx, gy)  # 0 = horizontal gradient = vertical edge
    cell = _cell_index(h, w).ravel()

    # --- embedding blocks -------------------------------------------------------------------------
    grad = np.bincount(cell * N_ORIENT + obin.ravel(), weights=mag.ravel(), minlength=GRID * GRID * N_ORIENT)
    grad = np.sqrt(grad.reshape(GRID * GRID, N_ORIENT) / (h * w / (GRID * GRID)))  # Hellinger-like
    ycc = (lum, blue - lum, red - lum)  # Y, Cb, Cr-ish
    if h % GRID == 0 and w % GRID == 0:  # the working size: equal cells, summed by a reshape
        layout = np.stack([c.reshape(GRID, h // GRID, GRID, w // GRID).sum((1, 3), dtype=np.float64).ravel()
                           for c in ycc], -1) / (h * w / (GRID * GRID))
    else:
        cnt = np.bincount(cell, minlength=GRID * GRID)
        layout = np.stack([np.bincount(cell, weights=c.ravel(), minlength=GRID * GRID) for c in ycc], -1)
        layout = layout / cnt[:, None]
    layout = layout * np.array([1.0, 2.0, 2.0], dtype=np.float64)
    hb = np.minimum((hue * HUE_BINS).astype(np.int64), HUE_BINS - 1)
    sb = np.minimum((sat * SAT_BINS).astype(np.int64), SAT_BINS - 1)
    hs = np.sqrt(np.bincount((hb * SAT_BINS + sb).ravel(), weights=(sat * val).ravel() + 0.02,
                             minlength=HUE_BINS * SAT_BINS) / (h * w))
    vb = np.minimum((val * VAL_BINS).astype(np.int64), VAL_BINS - 1)
    vh = np.sqrt(np.bincount(vb.ravel(), minlength=VAL_BINS) / (h * w))

    # --- scene statistics ---------------------------------------------------------------------------
    t3, b3 = h // 3, 2 * h // 3
    top, mid, bot = slice(0, t3), slice(t3, b3), slice(b3, h)
    half = h // 2
    dark = _min_filter(np.minimum(np.minimum(red, rgb[..., 1]), blue), 7)
    local = _box_mean(lum, 15)
    # Small bright sources: near-saturated pixels much brighter than their 15x15 neighbourhood.
    above = lum - local
    points = (lum > 0.8) & (above > 0.2)
    # Lamps: near-saturated pixels inside a dark neighbourhood (street lights, headlights, ceiling lights).
    lamps = (lum > 0.6) & (above > 0.25) & (local < 0.35)
    smooth = mag < 0.04
    vert = (obin == 0) | (obin == N_ORIENT - 1)
    horiz = (obin == N_ORIENT // 2) | (obin == N_ORIENT // 2 - 1)
    upper = slice(0, b3)
    mag_up = mag[upper]
    e_up = float(mag_up.sum()) + _EPS
    warm = (hue < 0.14) | (hue > 0.9)
    lit_top = val[:half] > 0.35
    hue_t, sat_t, val_t, lum_t = hue[top], sat[top], val[top], lum[top]
    blue_hue_t = (hue_t > 0.5) & (hue_t < 0.72)
    blue_top = blue_hue_t & (sat_t > 0.2) & (val_t > 0.2)
    grey_bot = sat[bot] < 0.12
    grey_mid = sat[mid] < 0.12
    lum_mean = float(lum.mean())
    lum_std = float(lum.std())
    p10, p90 = np.percentile(lum, [10, 90])
    points_bot = _frac(points[bot])
    stats = {
        "lum_mean": lum_mean,
        "lum_p10": float(p10),
        "lum_p90": float(p90),
        "lum_std": lum_std,
        "dark_frac": _frac(lum < 0.12),
        "top_lum": float(lum_t.mean()),
        "mid_lum": float(lum[mid].mean()),
        "bot_lum": float(lum[bot].mean()),
        "top_sat": float(sat_t.mean()),
        "sat_mean": float(sat.mean()),
        "bot_sat": float(sat[bot].mean()),
        "top_blue": float((blue[top] - red[top]).mean()),  # b - r in the sky band
        "top_warm_frac": _frac(warm[top] & (sat_t > 0.3) & (val_t > 0.35)),
        "top_blue_frac": _frac(blue_hue_t & (sat_t > 0.2) & (val_t > 0.4)),
        "top_smooth": _frac(smooth[top]),
        "top_bright_smooth": _frac(smooth[top] & (lum_t > 0.45)),
        "top_grad": float(mag[top].mean()),
        "top_std": float(lum_t.std()),
        "top_row_grad": float(lum[: h // 6].mean() - lum[h // 6: t3].mean()),  # >0: sky darker at horizon
        "point_frac": _frac(points),
        "point_top_frac": _frac(points[top]),
        "point_bot_frac": points_bot,
        "lamp_frac": _frac(lamps),
        "lamp_top_frac": _frac(lamps[top]),
        "dark_channel": float(dark.mean()),
        "dark_channel_top": float(dark[top].mean()),
        "edge_mean": float(mag.mean()),
        "bot_edge": float(mag[bot].mean()),
        "vert_ratio": float(mag_up[vert[upper]].sum() / e_up),
        "horiz_ratio": float(mag_up[horiz[upper]].sum() / e_up),
        "rms_contrast": float(lum_std / (lum_mean + 0.05)),
        "white_bot_frac": _frac((val[bot] > 0.7) & grey_bot),
        "white_mid_frac": _frac((val[mid] > 0.7) & grey_mid),
        "bot_spec": points_bot,
        "sky_rb": float((red[:half] - blue[:half])[lit_top].mean()) if lit_top.any() else 0.0,
        "sky_warm_frac": _frac(warm[:half] & (sat[:half] > 0.2) & lit_top),
        "fg_lum": float(lum[half:].mean()),
        "bright_frac": _frac(lum > 0.6),
        # Luminance of the blue-sky pixels (bright pale blue by day, deep dark blue at blue hour).
        "blue_sky_lum": float(lum_t[blue_top].mean()) if np.count_nonzero(blue_top) > 20 else -1.0,
    }
    sv = np.array([stats["lum_mean"], stats["lum_std"] * 2, stats["sat_mean"], stats["top_lum"],
                   stats["dark_channel"], stats["edge_mean"] * 5, stats["vert_ratio"],
                   stats["top_warm_frac"]], dtype=np.float64)
    blocks = {"grad": grad.ravel(), "layout": layout.ravel(), "hs": hs, "v": vh, "stats": sv}
    emb = np.concatenate([_unit(b) * BLOCK_WEIGHTS[k] for k, b in blocks.items()])
    emb = _unit(emb).astype(np.float32)
    return Features(embedding=emb, stats=stats)
