"""Vectorised numpy feature extraction for the weight-free CPU backend.

`extract(image)` downscales once to a fixed working size (WORK_W x WORK_H) and returns a `Features`
object with (a) a fixed-length image descriptor used as the embedding and (b) a dict of named scalar
scene statistics that the rules in `cpu.py` turn into tags. Everything is deterministic: integer
pixel input, fixed resampling filter, no randomness.

Cost: statistics of 8-bit channels (hue, saturation, value, the dark channel) are
taken on the uint8 pixels, with each threshold on a 0-1 value turned into the same test on its 0-255
level; the gradient energy per cell, band and orientation is one bincount; band means come from row
sums. The float32 luminance, its gradients and its local mean are computed exactly as they always were,
so every per-pixel test decides as before and the statistics only differ by float rounding of the sums.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

WORK_W, WORK_H = 160, 120
GRID = 4  # GRID x GRID cells for the gradient and colour-layout blocks (equal cells: divides WORK_W and WORK_H)
N_ORIENT = 8  # unsigned gradient orientation bins
HUE_BINS, SAT_BINS, VAL_BINS = 8, 3, 8
N_STATS = 8
EMBEDDING_DIM = GRID * GRID * N_ORIENT + GRID * GRID * 3 + HUE_BINS * SAT_BINS + VAL_BINS + N_STATS
# Block weights (applied after each block is L2-normalised): texture/layout dominate, stats are a hint.
BLOCK_WEIGHTS = {"grad": 1.0, "layout": 1.0, "hs": 0.7, "v": 0.5, "stats": 0.35}
_EPS = 1e-6
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_UNIT = np.arange(256, dtype=np.float32) / 255.0  # 8-bit level -> the float32 0-1 value the statistics use
_HUE_BIN = (np.minimum((_UNIT * HUE_BINS).astype(np.intp), HUE_BINS - 1) * SAT_BINS).astype(np.uint8)
_SAT_BIN = np.minimum((_UNIT * SAT_BINS).astype(np.intp), SAT_BINS - 1).astype(np.uint8)
_VAL_BIN = np.minimum((_UNIT * VAL_BINS).astype(np.intp), VAL_BINS - 1)


def _above(t: float) -> int:
    """The 8-bit level L such that level / 255 > t (in float32, as the 0-1 statistics compare) iff level >= L."""
    return int(np.count_nonzero(_UNIT <= np.float32(t)))


def _below(t: float) -> int:
    """The 8-bit level L such that level / 255 < t iff level < L."""
    return int(np.count_nonzero(_UNIT < np.float32(t)))


@dataclass(frozen=True)
class Features:
    embedding: np.ndarray  # float32, (EMBEDDING_DIM,), L2-normalised
    stats: dict[str, float]


def _box_mean(x: np.ndarray, k: int) -> np.ndarray:
    """Mean over a k x k window (edge-padded) using a float32 integral image (rounding as np.pad + cumsum)."""
    r = k // 2 + 1
    h, w = x.shape
    p = np.empty((h + 2 * r, w + 2 * r), dtype=x.dtype)
    p[r:r + h, r:r + w] = x
    p[:r, r:r + w] = x[0]
    p[r + h:, r:r + w] = x[-1]
    p[:, :r] = p[:, r:r + 1]
    p[:, r + w:] = p[:, r + w - 1:r + w]
    c = p.cumsum(0).cumsum(1)
    s = c[k:k + h, k:k + w] - c[:h, k:k + w] - c[k:k + h, :w] + c[:h, :w]
    return s / (k * k)


def _min_filter7(x: np.ndarray) -> np.ndarray:
    """Separable 7 x 7 minimum filter (edge-padded), each pass in three doubling steps; exact on any dtype."""
    h, w = x.shape
    p = np.empty((h, w + 6), dtype=x.dtype)
    p[:, 3:w + 3] = x
    p[:, :3] = x[:, :1]
    p[:, w + 3:] = x[:, -1:]
    m = np.minimum(p[:, :-1], p[:, 1:])  # window 2
    m = np.minimum(m[:, :-2], m[:, 2:])  # window 4
    p = np.empty((h + 6, w), dtype=x.dtype)
    np.minimum(m[:, :w], m[:, 3:3 + w], out=p[3:h + 3])  # two windows of 4 overlapping by one: 7
    p[:3] = p[3]
    p[h + 3:] = p[h + 2]
    m = np.minimum(p[:-1], p[1:])  # and the same down the columns
    m = np.minimum(m[:-2], m[2:])
    return np.minimum(m[:h], m[3:3 + h])


@lru_cache(maxsize=8)
def _segments(h: int, w: int) -> tuple[np.ndarray, tuple[int, ...], int]:
    """Per-pixel key (row segment, column cell) * N_ORIENT for the gradient bincount, and the row edges.

    Rows are cut at every cell boundary (GRID rows) and every band boundary (thirds and halves of the
    height), so that one bincount gives the gradient energy of each cell, band and orientation.
    """
    cuts = sorted({0, h} | {-(-i * h // GRID) for i in range(GRID)} | {h // 3, 2 * h // 3, h // 2})
    seg = np.searchsorted(cuts, np.arange(h), side="right") - 1
    cols = np.minimum(np.arange(w) * GRID // w, GRID - 1)
    key = (seg[:, None] * GRID + cols[None, :]) * N_ORIENT
    key = key.ravel().astype(np.intp)
    key.flags.writeable = False  # cached and shared between calls
    return key, tuple(cuts), len(cuts) - 1


# Orientation bin edges k * pi / N_ORIENT (k = 1 .. N_ORIENT / 2 - 1) as (cos, sin) pairs, for _orientation_bins;
# the edges past pi / 2 are their mirror images (-cos, sin), the same float32 numbers.
_EDGE_COS = np.cos(np.arange(1, N_ORIENT // 2) * np.pi / N_ORIENT).astype(np.float32)
_EDGE_SIN = np.sin(np.arange(1, N_ORIENT // 2) * np.pi / N_ORIENT).astype(np.float32)


def _orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Bin of the unsigned gradient direction (arctan2(gy, gx) mod pi) among N_ORIENT equal bins, without arctan2.

    With the direction folded into [0, pi), it lies past edge k exactly when gy' cos(edge) - gx' sin(edge) >= 0.
    In the first quadrant (gx, gy of the same sign, or gy = 0) only the edges below pi / 2 can be passed and
    the bin counts those with |gy| cos >= |gx| sin; otherwise all edges up to pi / 2 are passed and the mirrored
    edges past it are those with |gy| cos <= |gx| sin. The float32 products are those of the full 8-edge test,
    so the bins are the same, at half its cost.
    """
    ax, ay = np.abs(gx), np.abs(gy)
    first = ((gx > 0) == (gy > 0)) & (gx != 0)  # gx, gy of one sign (gx == 0 is pi / 2: the mirrored side)
    first |= gy == 0
    ge = np.zeros(gx.shape, dtype=np.int8)
    le = np.zeros(gx.shape, dtype=np.int8)
    for c, s in zip(_EDGE_COS, _EDGE_SIN, strict=True):
        a, b = ay * c, ax * s
        ge += a >= b
        le += a <= b
    obin = le + np.int8(N_ORIENT // 2)
    obin -= (obin - ge) * first  # ge where first (arithmetic: np.where and copyto are slower on int8)
    obin[(gx == 0) & (gy == 0)] = 0  # arctan2(0, 0) = 0
    return obin


def _pillow_hsv_tables() -> tuple[np.ndarray, np.ndarray]:
    """Pillow's RGB -> HSV hue and saturation as lookup tables, made by Pillow itself (so they are its numbers).

    Pillow's hue depends only on which channel is the largest (red, then green, then blue on ties) and on the
    other two channels' distances below it, (blue, green), (red, blue) or (green, red): one 256 x 256 table per
    case. Its saturation depends only on the largest and the smallest channel.
    """
    d = np.arange(256, dtype=np.uint8)
    x, y = np.meshgrid(d, d, indexing="ij")
    top = np.full_like(x, 255)

    def hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(np.stack([r, g, b], -1)).convert("HSV"))

    hue = np.stack([hsv(top, 255 - y, 255 - x)[..., 0], hsv(255 - x, top, 255 - y)[..., 0],
                    hsv(255 - y, 255 - x, top)[..., 0]])
    low = np.minimum(x, y)  # x = largest, low = smallest
    return hue.ravel(), hsv(x, low, low)[..., 1].ravel()


_HUE_TABLE, _SAT_TABLE = _pillow_hsv_tables()


def _hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's 8-bit HSV of 8-bit RGB channels from the tables above: the same numbers as Image.convert("HSV")
    (checked once on all 2^24 colours; the tests check ties), 2x faster than its per-pixel float arithmetic."""
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    dr, dg, db = mx - r, mx - g, mx - b
    is_r = dr == 0
    is_g = (dg == 0) > is_r
    is_b = ~(is_r | is_g)
    key = (is_g + is_b * np.int32(2)) << 16  # the case, then the two distances: (b, g), (r, b) or (g, r)
    key |= (db * is_r + dr * is_g + dg * is_b).astype(np.int32) << 8
    key |= dg * is_r + db * is_g + dr * is_b
    return np.take(_HUE_TABLE, key), np.take(_SAT_TABLE, (mx.astype(np.int32) << 8) | mn), mx


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + _EPS)


def _percentiles_10_90(x: np.ndarray) -> tuple[float, float]:
    """np.percentile(x, [10, 90]) (linear), by a sort instead of its multi-rank partition (2x faster).

    The interpolation repeats numpy's `_lerp` step for step (float32 difference, float64 weight), so the
    result is the same number.
    """
    flat = x.ravel()
    virtual = (flat.size - 1) * np.array([0.1, 0.9])
    lo = np.floor(virtual)
    gamma = virtual - lo
    order = np.sort(flat)  # a SIMD sort beats np.partition's selection of four ranks here
    a = order[lo.astype(np.intp)]
    b = order[np.minimum(lo.astype(np.intp) + 1, flat.size - 1)]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)
    return float(out[0]), float(out[1])


def extract(image: Image.Image) -> Features:
    """The embedding and the named scene statistics of one image (any size; any mode, converted to RGB)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    small = image.resize((WORK_W, WORK_H), Image.Resampling.BILINEAR, reducing_gap=2.0)
    u8 = np.asarray(small)
    rgb = u8.astype(np.float32) / 255.0
    h, w, _ = rgb.shape
    n = h * w
    lum = rgb @ _LUMA
    r8, g8, b8 = (np.ascontiguousarray(u8[..., i]) for i in range(3))
    hue8, sat8, val8 = _hsv(r8, g8, b8)
    t3, b3, half = h // 3, 2 * h // 3, h // 2

    # Central-difference gradients on luminance; |g| as np.hypot rounds it (float64, then float32), faster.
    gx = np.zeros_like(lum)
    gy = np.zeros_like(lum)
    np.subtract(lum[:, 2:], lum[:, :-2], out=gx[:, 1:-1])
    np.subtract(lum[2:, :], lum[:-2, :], out=gy[1:-1, :])
    m64 = np.square(gx, dtype=np.float64)
    m64 += np.square(gy, dtype=np.float64)
    mag = np.sqrt(m64, out=m64).astype(np.float32)
    obin = _orientation_bins(gx, gy)  # 0 = horizontal gradient = vertical edge

    # Gradient energy per (row segment, column cell, orientation): the cells, bands and ratios all come from it.
    key, cuts, n_seg = _segments(h, w)
    energy = np.bincount(key + obin.ravel(), weights=mag.ravel(), minlength=n_seg * GRID * N_ORIENT)
    energy = energy.reshape(n_seg, GRID, N_ORIENT)

    def rows(lo: int, hi: int) -> np.ndarray:  # energy of rows lo:hi (both cut points) per column cell, orientation
        return energy[cuts.index(lo):cuts.index(hi)].sum(0)

    # --- embedding blocks -------------------------------------------------------------------------
    cell_rows = [-(-i * h // GRID) for i in range(GRID)] + [h]  # the rows where i * GRID // h steps
    grad = np.stack([rows(cell_rows[i], cell_rows[i + 1]) for i in range(GRID)]).reshape(GRID * GRID, N_ORIENT)
    grad = np.sqrt(grad / (n / (GRID * GRID)))  # Hellinger-like
    cell_sums = _cell_sums(lum, h, w)
    blue_sums, red_sums = _cell_sums(b8, h, w) / 255.0, _cell_sums(r8, h, w) / 255.0
    layout = np.stack([cell_sums, 2.0 * (blue_sums - cell_sums), 2.0 * (red_sums - cell_sums)], -1)
    layout = layout.reshape(GRID * GRID, 3) / (n / (GRID * GRID))  # Y, Cb, Cr-ish means, chroma weighted 2x
    hs_bin = np.take(_HUE_BIN, hue8)
    hs_bin += np.take(_SAT_BIN, sat8)
    weight = np.take(_UNIT, sat8)  # sat * val + 0.02, in float32 as before
    weight *= np.take(_UNIT, val8)
    weight += np.float32(0.02)
    hs = np.sqrt(np.bincount(hs_bin.ravel(), weights=weight.ravel(), minlength=HUE_BINS * SAT_BINS) / n)
    val_hist = np.bincount(val8.ravel(), minlength=256)
    vh = np.sqrt(np.bincount(_VAL_BIN, weights=val_hist, minlength=VAL_BINS) / n)

    # --- scene statistics ---------------------------------------------------------------------------
    top, mid, bot = slice(0, t3), slice(t3, b3), slice(b3, h)
    lum_rows = lum.sum(1, dtype=np.float64)
    lum_sq_rows = np.square(lum, dtype=np.float64).sum(1)
    sat_rows = sat8.sum(1, dtype=np.int64) / 255.0
    dark8 = _min_filter7(np.minimum(np.minimum(r8, g8), b8))  # the dark channel, on 8-bit levels
    dark_rows = dark8.sum(1, dtype=np.int64) / 255.0
    e_all = energy.sum((1, 2))
    e_up = float(rows(0, b3).sum()) + _EPS
    e_up_orient = rows(0, b3).sum(0)
    lum_mean = float(lum_rows.sum()) / n
    lum_std = float(np.sqrt(max(lum_sq_rows.sum() / n - lum_mean * lum_mean, 0.0)))
    top_lum = float(lum_rows[top].sum()) / (t3 * w)
    top_std = float(np.sqrt(max(lum_sq_rows[top].sum() / (t3 * w) - top_lum * top_lum, 0.0)))
    p10, p90 = _percentiles_10_90(lum)
    bright = lum > 0.6
    n_bright = np.count_nonzero(bright)
    if n_bright:
        # Small bright sources: near-saturated pixels much brighter than their 15x15 neighbourhood; lamps:
        # near-saturated pixels inside a dark neighbourhood (street lights, headlights, ceiling lights).
        local = _box_mean(lum, 15)
        above = lum - local
        points = (lum > 0.8) & (above > 0.2)
        lamps = bright & (above > 0.25) & (local < 0.35)
    else:  # neither can exist without a pixel above 0.6
        points = lamps = np.zeros(lum.shape, dtype=bool)
    smooth_t = mag[top] < 0.04
    hue_t, sat_t, val_t = hue8[top], sat8[top], val8[top]
    warm_half = (hue8[:half] < _LT_014) | (hue8[:half] >= _GT_090)
    warm_t = warm_half[:t3] if t3 <= half else (hue_t < _LT_014) | (hue_t >= _GT_090)
    blue_hue_t = (hue_t >= _GT_050) & (hue_t < _LT_072)
    blue_top = blue_hue_t & (sat_t >= _GT_020) & (val_t >= _GT_020)
    lit_top = val8[:half] >= _GT_035
    n_lit = np.count_nonzero(lit_top)
    rb_half = r8[:half].astype(np.int16) - b8[:half]
    n_blue_top = np.count_nonzero(blue_top)
    points_bot = np.count_nonzero(points[bot]) / ((h - b3) * w)
    band = (h - b3) * w
    stats = {
        "lum_mean": lum_mean,
        "lum_p10": p10,
        "lum_p90": p90,
        "lum_std": lum_std,
        "dark_frac": np.count_nonzero(lum < 0.12) / n,
        "top_lum": top_lum,
        "mid_lum": float(lum_rows[mid].sum()) / ((b3 - t3) * w),
        "bot_lum": float(lum_rows[bot].sum()) / band,
        "top_sat": float(sat_rows[top].sum()) / (t3 * w),
        "sat_mean": float(sat_rows.sum()) / n,
        "bot_sat": float(sat_rows[bot].sum()) / band,
        "top_blue": float(np.sum(b8[top], dtype=np.int64) - np.sum(r8[top], dtype=np.int64)) / 255.0 / (t3 * w),
        "top_warm_frac": np.count_nonzero(warm_t & (sat_t >= _GT_030) & (val_t >= _GT_035)) / (t3 * w),
        "top_blue_frac": np.count_nonzero(blue_hue_t & (sat_t >= _GT_020) & (val_t >= _GT_040)) / (t3 * w),
        "top_smooth": np.count_nonzero(smooth_t) / (t3 * w),
        "top_bright_smooth": np.count_nonzero(smooth_t & (lum[top] > 0.45)) / (t3 * w),
        "top_grad": float(rows(0, t3).sum()) / (t3 * w),
        "top_std": top_std,
        "top_row_grad": float(lum_rows[: h // 6].sum() / ((h // 6) * w)
                              - lum_rows[h // 6: t3].sum() / ((t3 - h // 6) * w)),  # >0: sky darker at horizon
        "point_frac": np.count_nonzero(points) / n,
        "point_top_frac": np.count_nonzero(points[top]) / (t3 * w),
        "point_bot_frac": points_bot,
        "lamp_frac": np.count_nonzero(lamps) / n,
        "lamp_top_frac": np.count_nonzero(lamps[top]) / (t3 * w),
        "dark_channel": float(dark_rows.sum()) / n,
        "dark_channel_top": float(dark_rows[top].sum()) / (t3 * w),
        "edge_mean": float(e_all.sum()) / n,
        "bot_edge": float(rows(b3, h).sum()) / band,
        "vert_ratio": float(e_up_orient[[0, N_ORIENT - 1]].sum() / e_up),
        "horiz_ratio": float(e_up_orient[[N_ORIENT // 2 - 1, N_ORIENT // 2]].sum() / e_up),
        "rms_contrast": float(lum_std / (lum_mean + 0.05)),
        "white_bot_frac": np.count_nonzero((val8[bot] >= _GT_070) & (sat8[bot] < _LT_012)) / band,
        "white_mid_frac": np.count_nonzero((val8[mid] >= _GT_070) & (sat8[mid] < _LT_012)) / ((b3 - t3) * w),
        "bot_spec": points_bot,
        "sky_rb": float(rb_half[lit_top].sum(dtype=np.int64)) / 255.0 / n_lit if n_lit else 0.0,
        "sky_warm_frac": np.count_nonzero(warm_half & (sat8[:half] >= _GT_020) & lit_top) / (half * w),
        "fg_lum": float(lum_rows[half:].sum()) / ((h - half) * w),
        "bright_frac": n_bright / n,
        # Luminance of the blue-sky pixels (bright pale blue by day, deep dark blue at blue hour).
        "blue_sky_lum": float(lum[top][blue_top].sum(dtype=np.float64)) / n_blue_top if n_blue_top > 20 else -1.0,
    }
    sv = np.array([stats["lum_mean"], stats["lum_std"] * 2, stats["sat_mean"], stats["top_lum"],
                   stats["dark_channel"], stats["edge_mean"] * 5, stats["vert_ratio"],
                   stats["top_warm_frac"]], dtype=np.float64)
    blocks = {"grad": grad.ravel(), "layout": layout.ravel(), "hs": hs, "v": vh, "stats": sv}
    emb = np.concatenate([_unit(b) * BLOCK_WEIGHTS[k] for k, b in blocks.items()])
    emb = _unit(emb).astype(np.float32)
    return Features(embedding=emb, stats=stats)


def _cell_sums(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sums (float64) over the GRID x GRID equal cells of the working image, by a reshape."""
    return x.reshape(GRID, h // GRID, GRID, w // GRID).sum((1, 3), dtype=np.float64)


# 8-bit levels for the 0-1 thresholds of hue, saturation and value: x / 255 > t  <=>  level >= _GT_t.
_GT_020, _GT_030, _GT_035, _GT_040, _GT_050, _GT_070, _GT_090 = (
    _above(t) for t in (0.2, 0.3, 0.35, 0.4, 0.5, 0.7, 0.9))
_LT_012, _LT_014, _LT_072 = (_below(t) for t in (0.12, 0.14, 0.72))  # x / 255 < t  <=>  level < _LT_t
