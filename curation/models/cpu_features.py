"""Vectorised numpy feature extraction for the weight-free CPU backend.

`extract(image)` downscales once to a fixed working size (WORK_W x WORK_H) and returns a `Features`
object with (a) a fixed-length image descriptor used as the embedding and (b) a dict of named scalar
scene statistics that the rules in `cpu.py` turn into tags. Everything is deterministic: integer
pixel input, fixed resampling filter, no randomness.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def _cell_index(h: int, w: int) -> np.ndarray:
    rows = np.minimum(np.arange(h) * GRID // h, GRID - 1)
    cols = np.minimum(np.arange(w) * GRID // w, GRID - 1)
    return rows[:, None] * GRID + cols[None, :]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + _EPS)


def extract(image: Image.Image) -> Features:
    rgb, hsv = to_working_arrays(image)
    h, w, _ = rgb.shape
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]

    # Central-difference gradients on luminance.
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    gx[:, 1:-1] = lum[:, 2:] - lum[:, :-2]
    gy[1:-1, :] = lum[2:, :] - lum[:-2, :]
    mag = np.hypot(gx, gy)
    ang = np.arctan2(gy, gx) % np.pi  # unsigned gradient direction; 0 = horizontal gradient = vertical edge
    obin = np.minimum((ang / np.pi * N_ORIENT).astype(np.int64), N_ORIENT - 1)
    cell = _cell_index(h, w)

    # --- embedding blocks -------------------------------------------------------------------------
    grad = np.bincount((cell * N_ORIENT + obin).ravel(), weights=mag.ravel(),
                       minlength=GRID * GRID * N_ORIENT)
    grad = np.sqrt(grad.reshape(GRID * GRID, N_ORIENT) / (h * w / (GRID * GRID)))  # Hellinger-like
    ycc = np.stack([lum, rgb[..., 2] - lum, rgb[..., 0] - lum], -1)  # Y, Cb, Cr-ish
    cnt = np.bincount(cell.ravel(), minlength=GRID * GRID)
    layout = np.stack([np.bincount(cell.ravel(), weights=ycc[..., i].ravel(), minlength=GRID * GRID)
                       for i in range(3)], -1) / cnt[:, None]
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
    dark = _min_filter(rgb.min(-1), 7)
    local = _box_mean(lum, 15)
    # Small bright sources: near-saturated pixels much brighter than their 15x15 neighbourhood.
    points = (lum > 0.8) & (lum - local > 0.2)
    # Lamps: near-saturated pixels inside a dark neighbourhood (street lights, headlights, ceiling lights).
    lamps = (lum > 0.6) & (lum - local > 0.25) & (local < 0.35)
    top_rgb = rgb[top].reshape(-1, 3)
    smooth = mag < 0.04
    vert = obin == 0
    vert |= obin == N_ORIENT - 1
    horiz = (obin == N_ORIENT // 2) | (obin == N_ORIENT // 2 - 1)
    upper = slice(0, b3)
    e_up = float(mag[upper].sum()) + _EPS
    warm = (hue < 0.14) | (hue > 0.9)
    lit_top = val[: h // 2] > 0.35
    blue_top = (hue[top] > 0.5) & (hue[top] < 0.72) & (sat[top] > 0.2) & (val[top] > 0.2)
    stats = {
        "lum_mean": float(lum.mean()),
        "lum_p10": float(np.percentile(lum, 10)),
        "lum_p90": float(np.percentile(lum, 90)),
        "lum_std": float(lum.std()),
        "dark_frac": float((lum < 0.12).mean()),
        "top_lum": float(lum[top].mean()),
        "mid_lum": float(lum[mid].mean()),
        "bot_lum": float(lum[bot].mean()),
        "top_sat": float(sat[top].mean()),
        "sat_mean": float(sat.mean()),
        "bot_sat": float(sat[bot].mean()),
        "top_blue": float((top_rgb[:, 2] - top_rgb[:, 0]).mean()),  # b - r in the sky band
        "top_warm_frac": float((warm[top] & (sat[top] > 0.3) & (val[top] > 0.35)).mean()),
        "top_blue_frac": float(((hue[top] > 0.5) & (hue[top] < 0.72) & (sat[top] > 0.2)
                                & (val[top] > 0.4)).mean()),
        "top_smooth": float(smooth[top].mean()),
        "top_bright_smooth": float((smooth[top] & (lum[top] > 0.45)).mean()),
        "top_grad": float(mag[top].mean()),
        "top_std": float(lum[top].std()),
        "top_row_grad": float(lum[: h // 6].mean() - lum[h // 6: t3].mean()),  # >0: sky darker at horizon
        "point_frac": float(points.mean()),
        "point_top_frac": float(points[top].mean()),
        "point_bot_frac": float(points[bot].mean()),
        "lamp_frac": float(lamps.mean()),
        "lamp_top_frac": float(lamps[top].mean()),
        "dark_channel": float(dark.mean()),
        "dark_channel_top": float(dark[top].mean()),
        "edge_mean": float(mag.mean()),
        "bot_edge": float(mag[bot].mean()),
        "vert_ratio": float(mag[upper][vert[upper]].sum() / e_up),
        "horiz_ratio": float(mag[upper][horiz[upper]].sum() / e_up),
        "rms_contrast": float(lum.std() / (lum.mean() + 0.05)),
        "white_bot_frac": float(((val[bot] > 0.7) & (sat[bot] < 0.12)).mean()),
        "white_mid_frac": float(((val[mid] > 0.7) & (sat[mid] < 0.12)).mean()),
        "bot_spec": float(points[bot].mean()),
        "sky_rb": float(((rgb[..., 0] - rgb[..., 2])[: h // 2][lit_top]).mean()) if lit_top.any() else 0.0,
        "sky_warm_frac": float((warm[: h // 2] & (sat[: h // 2] > 0.2) & lit_top).mean()),
        "fg_lum": float(lum[h // 2:].mean()),
        "bright_frac": float((lum > 0.6).mean()),
        # Luminance of the blue-sky pixels (bright pale blue by day, deep dark blue at blue hour).
        "blue_sky_lum": float(lum[top][blue_top].mean()) if blue_top.sum() > 20 else -1.0,
    }
    sv = np.array([stats["lum_mean"], stats["lum_std"] * 2, stats["sat_mean"], stats["top_lum"],
                   stats["dark_channel"], stats["edge_mean"] * 5, stats["vert_ratio"],
                   stats["top_warm_frac"]], dtype=np.float64)
    blocks = {"grad": grad.ravel(), "layout": layout.ravel(), "hs": hs, "v": vh, "stats": sv}
    emb = np.concatenate([_unit(b) * BLOCK_WEIGHTS[k] for k, b in blocks.items()])
    emb = _unit(emb).astype(np.float32)
    return Features(embedding=emb, stats=stats)
