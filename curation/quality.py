"""Per-image quality signals and cleanvision-like issue flags, from an image that is already decoded.

The pipeline decodes each image once (possibly reduced by JPEG draft mode to a 256-512 px short side) and makes its
thumbnail from that decode. So that a signal means the same whatever scale the decoder chose, every signal is computed
on a fixed-size working copy: the image shrunk (never enlarged) to fit WORK_SIDE x WORK_SIDE (256), exactly as
Image.thumbnail shrinks it, which is the thumbnail the viewer shows at the default thumbnail size. The thumbnail step
hands that thumbnail here, so the signals cost no resize of their own (curation.thumbnails.decode_with_facts); the
perceptual hash is taken on a 32 x 32 grayscale of it. Size and aspect ratio come from the full width and height the
caller passes, not from the (possibly reduced) decoded image.

Signals (all plain floats, except phash):
    brightness      mean luma (Rec. 601, as Pillow's "L"), 0-1
    luma_p05/p99    5th and 99th percentile of luma, 0-1 (cleanvision's light/dark statistics)
    contrast        standard deviation of luma, 0-1
    blur            variance of the 4-neighbour Laplacian of the working grayscale (0-255 scale); low = blurry
    sharpness       blur / luma variance (both on 0-255): the same, made independent of contrast, so that a sharp
                    but low-contrast scene (fog, dusk) is not mistaken for a blurred one
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
    blurry           blur < 20 (next to no edges at any contrast), or blur < 50 and sharpness < 0.01 (few edges for
                     the contrast there is); never when flat (contrast < 0.02), low_information or dark, which have
                     their own flags. Blur is judged at the working scale: a blur far below one working pixel (say
                     radius 4 on a 4000 px photo) is invisible in a 256 px view and is not flagged.
                     cleanvision scores the std of FIND_EDGES at a 64 px long side (1 - exp(-0.01 std) < 0.17,
                     plus a dark penalty). Ours was calibrated on the 199 real road photos of shared/datasets/real-dev
                     (bench/check_blur_flags.py): it flags 191 of their GaussianBlur(radius 4) copies, 146 of the
                     radius-2 copies and 8 of the originals (all 8 labelled foggy). Of the 80 photos larger than
                     256 px: 74, 28 and 8; a radius-2 blur of a 1280 px photo is 0.4 px at the working scale. (Until
                     the working copy became the 256 px thumbnail it was 256 px on the short side, with
                     thresholds 8 / 40 / 0.005: 196, 148 and 11; of the 80, 79, 46 and 11.)
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

WORK_SIDE = 256  # every pixel signal is computed on the image shrunk to fit WORK_SIDE x WORK_SIDE
PHASH_SIDE = 32  # the hash is taken from the 8 x 8 lowest frequencies of a 32 x 32 DCT
PHASH_BITS = 8

DARK_LUMA_P99 = 0.37
OVEREXPOSED_LUMA_P05 = 0.95
BLURRY_LAPLACIAN_VAR = 50.0
BLURRY_SHARPNESS = 0.01
BLURRY_LAPLACIAN_VAR_FLOOR = 20.0
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


def _laplacian_variance(gray_u8: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the interior pixels (exact: integer arithmetic)."""
    if gray_u8.shape[0] < 3 or gray_u8.shape[1] < 3:
        return 0.0
    g = gray_u8.astype(np.int16)
    lap = g[1:-1, :-2] + g[1:-1, 2:]
    lap += g[:-2, 1:-1]
    lap += g[2:, 1:-1]
    lap -= 4 * g[1:-1, 1:-1]
    n = lap.size
    mean = int(lap.sum(dtype=np.int64)) / n
    square = np.square(lap, dtype=np.int32)  # |lap| <= 1020: its square fits, the sum needs int64
    return max(int(square.sum(dtype=np.int64)) / n - mean * mean, 0.0)


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
    integer factor to at least 3x the hash grid (Pillow's reducing_gap=3), 3x cheaper. On 500 photos and
    synthetic frames that changed no bit for 87% and 2 bits for the rest (4 bits once).
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


def image_signals(img: Image.Image, width: int, height: int) -> dict[str, float | int]:
    """Quality signals of one decoded image (see the module docstring for each key).

    Args:
        img: the decoded image (any mode; converted to RGB), possibly reduced in size by the decoder, or its
            working copy (`working_copy`), which is then used as it is.
        width, height: the full size of the original image, for aspect ratio and size.

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
    blur = _laplacian_variance(np.asarray(gray_img))
    return {
        "brightness": mean / 255.0,
        "luma_p05": p05 / 255.0,
        "luma_p99": p99 / 255.0,
        "contrast": math.sqrt(var) / 255.0,
        "blur": blur,
        "sharpness": blur / (var + 1e-6),
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
    blur = signals["blur"]
    few_edges = blur < BLURRY_LAPLACIAN_VAR and signals["sharpness"] < BLURRY_SHARPNESS
    soft = blur < BLURRY_LAPLACIAN_VAR_FLOOR or few_edges
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
