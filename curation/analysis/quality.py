"""Per-image quality signals and cleanvision-like issue flags, from an image that is already decoded.

The pipeline decodes each image once (possibly reduced by JPEG draft mode to a 256-512 px short side) and makes its
thumbnail from that decode. So that a signal means the same whatever scale the decoder chose, the exposure, colour
and information signals are computed on a fixed-size working copy: the image shrunk (never enlarged) to fit
WORK_SIDE x WORK_SIDE (256), exactly as Image.thumbnail shrinks it, which is the thumbnail the viewer shows at the
default thumbnail size. The thumbnail step hands that thumbnail here, so those signals cost no resize of their own
(curation.inference.thumbnails.decode_with_facts); the perceptual hash is taken on a 32 x 32 grayscale of it. Size
and aspect ratio come from the full width and height the caller passes, not from the (possibly reduced) decoded image.

Blur and sharpness are not measured on the thumbnail: a 1080p photo is shrunk 7.5x there, which hides a blur of a
few pixels. They are measured on the decode itself (`detail_view`), brought to a fixed scale as draft mode would
decode it: reduced by a power of two to the smallest size with at least WORK_SIDE px on the short side (a 1080p
JPEG's 1/4 draft, 480 x 270, as it comes from the decoder; a PNG or a larger decode box-reduced to the same). So the
thresholds do not depend on the image's size, its format or the thumbnail size, and there is no second decode.

Signals (all plain floats, except phash):
    brightness      mean luma (Rec. 601, as Pillow's "L"), 0-1
    luma_p05/p99    5th and 99th percentile of luma, 0-1 (cleanvision's light/dark statistics)
    contrast        standard deviation of luma, 0-1
    blur            variance of the 4-neighbour Laplacian of the detail view's grayscale (0-255 scale): how much
                    detail there is at its finest scale; low = blurry or featureless
    sharpness       mean squared Laplacian of the detail view over that of the view halved (a 2 x 2 box
                    reduction), on the tenth of its 16 px tiles with the most detail at the halved scale: the finest
                    scale's detail against the next coarser one's, where the image has edges. A blur takes the fine
                    scale away first, so a blurred image scores far below any sharp photo. Unlike a ratio of blur to
                    luma variance, it depends neither on contrast (fog, dusk) nor on how much of the frame has edges
                    (a sky, a car)
    entropy         Shannon entropy of the 256-bin luma histogram, bits (0-8); low = little information
    colourfulness   Hasler & Suesstrunk (2003) colourfulness M on 0-255 RGB; 0 for a grey image
    saturation      mean per-pixel chroma (max - min of R, G, B), 0-1
    chroma_p99      99th percentile of that chroma, 0-1; ~0 for a grayscale image, whatever its encoding
    aspect_ratio    min(w/h, h/w) of the full-size image
    megapixels      w * h / 1e6 of the full-size image
    phash           64-bit DCT perceptual hash (as imagehash.phash, hash_size 8) as a signed int64

Flag thresholds, in relation to cleanvision's defaults (cleanvision 0.3, `ImagePropertyIssueManager`):
    dark             luma_p99 < 0.37: cleanvision's dark default (its 99th-percentile brightness < 0.37).
    overexposed      luma_p05 > 0.95: cleanvision's "light" default (1 - 5th-percentile brightness < 0.05).
    blurry           sharpness < 0.15 (the finest scale is missing: blurred), or blur < 4 (next to no detail at
                     any scale, where JPEG noise keeps sharpness up: a blurred fog scene); never when flat
                     (contrast < 0.02), low_information or dark, which have their own flags. Blur is judged at the
                     detail view's scale: a blur well below one of its pixels (say radius 4 on a 4000 px photo, 0.5 px
                     at its 1/8 draft) is not flagged. cleanvision scores the std of FIND_EDGES at a 64 px long side
                     (1 - exp(-0.01 std) < 0.17, plus a dark penalty).
                     Calibrated with bench/check_blur_flags.py on real photos, 1080p JPEGs upscaled from them and
                     synthetic 1080p JPEGs, sharp and blurred (docs/benchmarks.md has the figures).
    low_information  entropy < 3.0 bits: cleanvision's default is 0.1 x entropy < 0.3, i.e. 3.0 bits (of Pillow's
                     RGB histogram; ours is of luma, so for a grey image it flags up to log2(3) = 1.6 bits more).
    grayscale        chroma_p99 < 0.02 (5/255: tolerates JPEG chroma noise). cleanvision looks at the file's mode
                     ("L"); images here are decoded to RGB, so the pixels decide.
    odd_aspect_ratio aspect_ratio < 0.35: cleanvision's default.
    odd_size         short side < 64 px or more than 100 megapixels; and, when the caller passes the dataset's
                     typical side (median of sqrt(w * h)), sqrt(w * h) off it by a factor of more than 10, which is
                     cleanvision's dataset-relative odd_size default (threshold 10).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageChops
from scipy.fft import dct

WORK_SIDE = 256  # every pixel signal but blur is computed on the image shrunk to fit WORK_SIDE x WORK_SIDE
DETAIL_MAX_SIDE = 1024  # the detail view's long side is cropped to this, so a panorama's costs no more than 16:9's
DETAIL_TILE = 16  # sharpness compares the detail view and its half on tiles of this many view px
DETAIL_TOP_SHARE = 0.1  # ... the tenth of them with the most detail
PHASH_SIDE = 32  # the hash is taken from the 8 x 8 lowest frequencies of a 32 x 32 DCT
PHASH_BITS = 8

DARK_LUMA_P99 = 0.37
OVEREXPOSED_LUMA_P05 = 0.95
BLURRY_SHARPNESS = 0.15
BLURRY_LAPLACIAN_VAR_FLOOR = 4.0
BLURRY_MIN_CONTRAST = 0.02
LOW_INFORMATION_ENTROPY = 3.0
GRAYSCALE_CHROMA_P99 = 0.02
ODD_ASPECT_RATIO = 0.35
ODD_SIZE_MIN_SIDE = 64
ODD_SIZE_MAX_MEGAPIXELS = 100.0
ODD_SIZE_RATIO = 10.0

FLAGS = ("dark", "overexposed", "blurry", "low_information", "grayscale", "odd_aspect_ratio", "odd_size")

def working_copy(img: Image.Image) -> Image.Image:
    """RGB, shrunk (never enlarged) to fit WORK_SIDE x WORK_SIDE as Image.thumbnail does (reducing_gap 2, bicubic).

    An image that already fits is its own working copy: a thumbnail made this way is passed through untouched."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    if max(img.size) > WORK_SIDE:
        img = img.copy()
        img.thumbnail((WORK_SIDE, WORK_SIDE))
    return img


def detail_view(img: Image.Image) -> Image.Image:
    """The grayscale on which blur is measured: img reduced by a power of two (a box average, as draft mode's DCT
    scaling is) to the smallest size with at least WORK_SIDE px on the short side; a long side beyond
    DETAIL_MAX_SIDE is centre-cropped.

    A power of two, so that a PNG and a JPEG of the same photo, or a decode for a larger thumbnail, land on the
    scale a draft decode at WORK_SIDE gives; the draft decode itself is used as it is."""
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    gray = img.convert("L") if img.mode != "L" else img
    factor = max(1, min(gray.size) // WORK_SIDE)
    factor = 1 << (factor.bit_length() - 1)
    if factor > 1:
        gray = gray.reduce(factor)
    w, h = gray.size
    cw, ch = min(w, DETAIL_MAX_SIDE), min(h, DETAIL_MAX_SIDE)
    if (cw, ch) != (w, h):
        left, top = (w - cw) // 2, (h - ch) // 2
        gray = gray.crop((left, top, left + cw, top + ch))
    return gray


_LEVELS = np.arange(256, dtype=np.float64)
_LEVELS_SQ = _LEVELS * _LEVELS


def _moments(hist: np.ndarray) -> tuple[float, float]:
    """Mean and (population) variance of 0-255 values given their 256-bin histogram."""
    n = hist.sum()
    mean = float(hist @ _LEVELS) / n
    return mean, max(float(hist @ _LEVELS_SQ) / n - mean * mean, 0.0)


def _percentiles(hist: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """np.percentile's default (linear) percentiles of 0-255 values, from their 256-bin histogram."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    out = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        lo = math.floor(pos)
        below, above = np.searchsorted(cum, [lo, min(lo + 1, n - 1)], side="right")
        out.append(float(below + (pos - lo) * (above - below)))
    return out


def _laplacian(gray_u8: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of the interior pixels, int16 (exact: |value| <= 1020); empty below 3 x 3."""
    g = gray_u8.astype(np.int16)
    lap = g[1:-1, :-2] + g[1:-1, 2:]
    lap += g[:-2, 1:-1]
    lap += g[2:, 1:-1]
    lap -= 4 * g[1:-1, 1:-1]
    return lap


def _laplacian_variance(lap: np.ndarray) -> float:
    """Variance of a Laplacian (exact: integer sums)."""
    if lap.size == 0:
        return 0.0
    n = lap.size
    mean = int(lap.sum(dtype=np.int64)) / n
    square = np.square(lap, dtype=np.int32)  # |lap| <= 1020: its square fits, the sum needs int64
    return max(int(square.sum(dtype=np.int64)) / n - mean * mean, 0.0)


def _tile_energy(lap: np.ndarray, tile: int, rows: int, cols: int) -> np.ndarray:
    """Sum of lap^2 over each of rows x cols tiles of tile x tile values (from the top left), flattened."""
    square = lap[: rows * tile, : cols * tile].astype(np.float32)
    square *= square
    # A matrix-vector product (BLAS) sums along rows faster than numpy's sum over reshaped axes.
    per_row = square.reshape(rows * tile, cols, tile) @ np.ones(tile, dtype=np.float32)
    return per_row.reshape(rows, tile, cols).sum(axis=1).ravel()


def _fine_share(fine: np.ndarray, view: Image.Image) -> float:
    """Sharpness (module docstring): mean lap^2 of the detail view over that of the view halved, on the tenth of
    DETAIL_TILE-px tiles with the most half-scale detail.

    Over the strongest tiles, not the frame: there the edges dwarf the noise (sensor, JPEG) that would otherwise
    fill a blurred image's empty finest scale and read as sharp; a sky or a fogged background does not dilute it."""
    coarse = _laplacian(np.asarray(view.reduce(2)))
    half = DETAIL_TILE // 2
    # fine[i] is view row i + 1 and coarse[j] view rows 2j + 2 and 2j + 3: fine[1:] lines the tiles up.
    rows, cols = (max(0, min((f - 1) // DETAIL_TILE, c // half)) for f, c in zip(fine.shape, coarse.shape))
    if rows * cols == 0:  # smaller than one tile: the whole image
        fine_mean = float(np.square(fine, dtype=np.int32).mean()) if fine.size else 0.0
        return fine_mean / ((float(np.square(coarse, dtype=np.int32).mean()) if coarse.size else 0.0) + 1e-6)
    fine_e, coarse_e = _tile_energy(fine[1:, 1:], DETAIL_TILE, rows, cols), _tile_energy(coarse, half, rows, cols)
    top = max(1, math.ceil(DETAIL_TOP_SHARE * rows * cols))
    strongest = np.argpartition(coarse_e, coarse_e.size - top)[coarse_e.size - top:]
    return float(fine_e[strongest].sum()) / 4.0 / (float(coarse_e[strongest].sum()) + 1e-6)  # 4x the pixels


def _entropy_bits(hist: np.ndarray) -> float:
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _colour(rgb: Image.Image) -> tuple[float, np.ndarray]:
    """Hasler & Suesstrunk colourfulness and the 256-bin histogram of chroma (max - min of R, G, B).

    All from 256-bin histograms of Pillow images, no per-pixel arrays: |r - g|, |g - b| and |b - r| are exact
    8-bit images (ImageChops.difference) whose largest is the chroma, and whose squares give every second
    moment needed, since rg = r - g and 2 yb = (r - b) + (g - b) with 2 (r - b)(g - b) = (r - b)^2 + (g - b)^2
    - (r - g)^2. The sums are integers, so the result is exact up to the last division.
    """
    r, g, b = rgb.split()
    d_rg, d_gb, d_br = ImageChops.difference(r, g), ImageChops.difference(g, b), ImageChops.difference(b, r)
    chroma = ImageChops.lighter(ImageChops.lighter(d_rg, d_gb), d_br)
    s_r, s_g, s_b = (float(np.asarray(band.histogram(), dtype=np.float64) @ _LEVELS) for band in (r, g, b))
    q_rg, q_gb, q_br = (float(np.asarray(d.histogram(), dtype=np.float64) @ _LEVELS_SQ) for d in (d_rg, d_gb, d_br))
    n = rgb.width * rgb.height
    m_rg, m_yb = (s_r - s_g) / n, (0.5 * (s_r + s_g) - s_b) / n
    sd_rg = math.sqrt(max(q_rg / n - m_rg * m_rg, 0.0))
    sd_yb = math.sqrt(max((2.0 * (q_br + q_gb) - q_rg) / 4.0 / n - m_yb * m_yb, 0.0))
    colourfulness = float(math.hypot(sd_rg, sd_yb) + 0.3 * math.hypot(m_rg, m_yb))
    return colourfulness, np.asarray(chroma.histogram(), dtype=np.float64)


def phash(gray: Image.Image) -> int:
    """The 64-bit DCT perceptual hash of an image as a signed int64 (bit 63 first, as imagehash orders them).

    Same recipe as imagehash.phash: 32 x 32 grayscale (Lanczos), 2D DCT-II, the 8 x 8 lowest frequencies,
    each bit set when the coefficient is above their median; except that the downscale first box-reduces by an
    integer factor to at least 3x the hash grid (Pillow's reducing_gap=3): cheaper, and it moves a few bits at most.
    """
    if gray.mode != "L":
        gray = gray.convert("L")
    small = gray.resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    # scipy's DCT, not a matrix product: it gives exact zeros for a flat image (only the DC bit set), where a
    # product leaves rounding noise that would decide the bits.
    coeffs = dct(dct(np.asarray(small, dtype=np.float64), axis=0), axis=1)[:PHASH_BITS, :PHASH_BITS].ravel()
    middle = np.sort(coeffs)[PHASH_BITS * PHASH_BITS // 2 - 1: PHASH_BITS * PHASH_BITS // 2 + 1]
    bits = coeffs > (middle[0] + middle[1]) / 2.0  # above the median
    value = int(np.packbits(bits).view(">u8")[0])
    return value - (1 << 64) if value >= (1 << 63) else value


def image_signals(
    img: Image.Image, width: int, height: int, detail: Image.Image | None = None
) -> dict[str, float | int]:
    """Quality signals of one decoded image (see the module docstring for each key).

    Args:
        img: the decoded image (any mode; converted to RGB), possibly reduced in size by the decoder, or its
            working copy (`working_copy`), which is then used as it is.
        width, height: the full size of the original image, for aspect ratio and size.
        detail: the largest decode of the image at hand, for blur and sharpness (`detail_view`); by default img.
            Pass the decode when img is its thumbnail, or a blur of a few full-size pixels goes unseen.

    Returns:
        A flat dict of floats plus `phash` (signed int64), ready to be one row of a signals table.
    """
    work = working_copy(img)
    gray_img = work.convert("L")
    # Every statistic of 0-255 values comes from its histogram (Pillow's C): exact, and far cheaper than sorting
    # for percentiles or float copies of the image for moments.
    hist = np.asarray(gray_img.histogram(), dtype=np.float64)
    mean, var = _moments(hist)
    p05, p99 = _percentiles(hist, (5, 99))
    colourfulness, chroma_hist = _colour(work)
    w, h = max(int(width), 1), max(int(height), 1)
    view = detail_view(img if detail is None else detail)
    fine = _laplacian(np.asarray(view))
    blur = _laplacian_variance(fine)
    return {
        "brightness": mean / 255.0,
        "luma_p05": p05 / 255.0,
        "luma_p99": p99 / 255.0,
        "contrast": math.sqrt(var) / 255.0,
        "blur": blur,
        "sharpness": _fine_share(fine, view),
        "entropy": _entropy_bits(hist),
        "colourfulness": colourfulness,
        "saturation": _moments(chroma_hist)[0] / 255.0,
        "chroma_p99": _percentiles(chroma_hist, (99,))[0] / 255.0,
        "aspect_ratio": min(w / h, h / w),
        "megapixels": w * h / 1e6,
        "phash": phash(gray_img),
    }


def quality_flags(
    signals: dict[str, float | int], width: int, height: int, typical_side: float | None = None
) -> list[str]:
    """The cleanvision-like issues of one image, in FLAGS order (thresholds in the module docstring).

    Args:
        signals: a dict from `image_signals`.
        width, height: the full size of the image.
        typical_side: the dataset's median sqrt(width * height), for the dataset-relative odd_size rule.
    """
    flags = []
    if signals["luma_p99"] < DARK_LUMA_P99:
        flags.append("dark")
    if signals["luma_p05"] > OVEREXPOSED_LUMA_P05:
        flags.append("overexposed")
    low_information = signals["entropy"] < LOW_INFORMATION_ENTROPY
    flat = signals["contrast"] < BLURRY_MIN_CONTRAST
    soft = signals["sharpness"] < BLURRY_SHARPNESS or signals["blur"] < BLURRY_LAPLACIAN_VAR_FLOOR
    if soft and not (flat or low_information or "dark" in flags):
        flags.append("blurry")
    if low_information:
        flags.append("low_information")
    if signals["chroma_p99"] < GRAYSCALE_CHROMA_P99:
        flags.append("grayscale")
    w, h = max(int(width), 1), max(int(height), 1)
    if min(w / h, h / w) < ODD_ASPECT_RATIO:
        flags.append("odd_aspect_ratio")
    side = math.sqrt(w * h)
    relative = typical_side is not None and typical_side > 0 and (
        side / typical_side > ODD_SIZE_RATIO or typical_side / side > ODD_SIZE_RATIO
    )
    if min(w, h) < ODD_SIZE_MIN_SIDE or w * h / 1e6 > ODD_SIZE_MAX_MEGAPIXELS or relative:
        flags.append("odd_size")
    return flags


def quality_score(signals: dict[str, float | int]) -> float:
    """A 0-1 score, higher is better; used to keep the best image of a duplicate group.

    Weighted sum of: sharpness (log10 of the Laplacian variance, 1000 and up scores 1), exposure (1 at mid-grey
    mean luma, falling to 0 at black or white, and 0 when dark or overexposed), contrast (luma std, 0.25 and up
    scores 1), information (entropy / 8 bits) and resolution (log2 of megapixels, 2 MP and up scores 1,
    0.06 MP and below 0), so that of two otherwise equal copies the larger one wins.
    """
    sharp = min(max(math.log10(1.0 + float(signals["blur"])) / 3.0, 0.0), 1.0)
    exposed = signals["luma_p99"] >= DARK_LUMA_P99 and signals["luma_p05"] <= OVEREXPOSED_LUMA_P05
    exposure = (1.0 - abs(float(signals["brightness"]) - 0.5) * 2.0) if exposed else 0.0
    contrast = min(float(signals["contrast"]) / 0.25, 1.0)
    information = min(float(signals["entropy"]) / 8.0, 1.0)
    megapixels = float(signals.get("megapixels", 0.0))
    resolution = min(max((math.log2(megapixels) + 4.0) / 5.0, 0.0), 1.0) if megapixels > 0 else 0.0
    return 0.35 * sharp + 0.15 * exposure + 0.15 * contrast + 0.15 * information + 0.2 * resolution
