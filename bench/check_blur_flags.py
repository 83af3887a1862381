"""How the "blurry" flag behaves on real photos and on 1080p JPEGs with a planted blur, and what measuring it costs.

Usage:
    python bench/check_blur_flags.py                     # shared/datasets/real-dev and real-train
    python bench/check_blur_flags.py --real DIR --real DIR2   # any folders of photos
    python bench/check_blur_flags.py --synthetic 8      # synthetic 1080p scenes per kind (3 kinds)

Every image is JPEG-encoded (quality 95) and goes through the pipeline's own per-image step,
`curation.inference.thumbnails.decode_with_facts(data, 256)`: draft decode, quality signals (blur on the decode, the rest on the
256 px thumbnail), thumbnail. Three checks:

1. Real photos at their own size, and GaussianBlur(2) and (4) copies of them, per folder: how many are flagged
   blurry, over all photos and over those larger than 256 px (the share of originals flagged is the false-positive
   rate).
2. 1920 x 1080 JPEGs with a planted GaussianBlur(3), (4) and (6) (blurred at 1080p): real photos upscaled to 1080p (a
   16:9 centre crop at least 480 x 270, so the 1/4 draft decode a 1080p JPEG gets is not itself an upscale), and
   synthetic scenes (dead leaves, street-like shapes with text, coloured blocks). Flagged originals and blurred copies,
   also at JPEG quality 85 and 75 and with noise (sd 2) added after the blur.
3. The cost: image_signals with blur on the decode against blur on the thumbnail (as before), per 1080p image, one core.

The thresholds in curation.analysis.quality were chosen on these sets; the figures are the ones quoted in its docstring.
Writes bench/results/blur-flags-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import support
from PIL import Image, ImageDraw, ImageFilter

from curation.analysis.quality import WORK_SIDE, image_signals, quality_flags, working_copy
from curation.inference.thumbnails import decode_with_facts

DATASETS = support.REPO.parent / "shared" / "datasets"
RADII = (0, 2, 4)  # at the photo's own size
# The 1080p copies: (column, GaussianBlur radius at 1920 x 1080, JPEG quality, sd of noise added after the blur). The
# issue's target is radius 6 at quality 95; the last three columns check that it holds with common JPEG qualities and
# a camera's noise, which fill a blurred image's empty finest scale.
COPIES_1080 = (("original", 0, 95, 0.0), ("orig q75", 0, 75, 0.0), ("blur(3)", 3, 95, 0.0), ("blur(4)", 4, 95, 0.0),
               ("blur(6)", 6, 95, 0.0), ("b6 q85", 6, 85, 0.0), ("b6 q75", 6, 75, 0.0), ("b6 noise2", 6, 90, 2.0))
HD = (1920, 1080)


def jpeg(img: Image.Image, quality: int = 95, noise: float = 0.0) -> bytes:
    if noise:  # luma noise, the same for every image (seeded)
        grain = np.random.default_rng(1).normal(0.0, noise, (img.height, img.width, 1))
        img = Image.fromarray(np.clip(np.asarray(img) + grain, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def flagged(data: bytes) -> tuple[bool, int, float, float]:
    """(blurry?, long side, blur, sharpness) of JPEG bytes, through the pipeline's per-image step."""
    facts = decode_with_facts(data, WORK_SIDE).facts
    w, h = int(facts["width"]), int(facts["height"])
    return "blurry" in quality_flags(facts, w, h), max(w, h), float(facts["blur"]), float(facts["sharpness"])


def to_hd(img: Image.Image) -> Image.Image | None:
    """A 16:9 centre crop upscaled to 1920 x 1080, or None when the crop is smaller than the 1/4 draft (480 x 270)."""
    w, h = img.size
    cw, ch = min(w, h * 16 // 9), min(h, w * 9 // 16)
    if cw < HD[0] // 4 or ch < HD[1] // 4:
        return None
    crop = img.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    return crop.resize(HD, Image.Resampling.BICUBIC)


def dead_leaves(rng: np.random.Generator) -> Image.Image:
    """Occluding discs with radii ~ r^-3 (3-300 px): scale-invariant, with a photo's 1/f^2 spectrum."""
    img = Image.new("RGB", HD, tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    lo, hi = 3.0**-2, 300.0**-2
    for _ in range(30000):
        r = (lo - rng.random() * (lo - hi)) ** -0.5
        x, y = rng.uniform(-r, HD[0] + r), rng.uniform(-r, HD[1] + r)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def shapes(rng: np.random.Generator) -> Image.Image:
    """A street-like frame: a sky gradient, flat ground, boxes, ellipses, thin lines and small text, mild noise."""
    w, h = HD
    px = np.empty((h, w, 3))
    px[: h // 3] = np.linspace(80, 220, h // 3)[:, None, None] * np.array([0.6, 0.8, 1.0])
    px[h // 3:] = rng.integers(60, 160, 3)
    img = Image.fromarray(px.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(60):
        x, y, bw, bh = rng.uniform(0, w), rng.uniform(h // 4, h), rng.uniform(20, 400), rng.uniform(20, 300)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x, y, x + bw, y + bh), fill=fill)
    for _ in range(40):
        draw.line([tuple(rng.uniform(0, HD)) for _ in range(2)], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 6)))
    for _ in range(30):
        draw.text(tuple(rng.uniform(0, (w - 100, h - 20))), "EXIT 42 CITY", fill=(255, 255, 255))
    return Image.fromarray(np.clip(np.asarray(img) + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8))


def blocks(rng: np.random.Generator) -> Image.Image:
    """Coloured blocks at several scales (96 down to 2 px) under a sky gradient, plus noise."""
    w, h = HD
    px = np.full((h, w, 3), 128.0)
    for cell, amplitude in ((96, 60.0), (24, 40.0), (6, 25.0), (2, 15.0)):
        px += np.kron(rng.normal(0, amplitude, (h // cell + 1, w // cell + 1, 3)), np.ones((cell, cell, 1)))[:h, :w]
    px[: h // 3] = np.linspace(90, 200, w)[None, :, None] * np.array([0.6, 0.8, 1.0])
    return Image.fromarray(np.clip(px + rng.normal(0, 6, px.shape), 0, 255).astype(np.uint8))


SCENES: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "dead leaves": dead_leaves, "shapes": shapes, "blocks": blocks,
}


def count(rows: list[tuple[bool, int, float, float]], larger: bool = False) -> int:
    return sum(f for f, side, _, _ in rows if side > WORK_SIDE or not larger)


def check_own_size(folder: Path, paths: list[Path]) -> dict[str, object]:
    rows: dict[int, list[tuple[bool, int, float, float]]] = {r: [] for r in RADII}
    for path in paths:
        original = Image.open(path).convert("RGB")
        for radius in RADII:
            rows[radius].append(flagged(jpeg(original.filter(ImageFilter.GaussianBlur(radius)) if radius else original)))
    n_large = sum(side > WORK_SIDE for _, side, _, _ in rows[0])
    print(f"\n== 1. {len(paths)} real photos of {folder.name} at their own size ({n_large} larger than {WORK_SIDE} px)")
    print(f"{'copy':<18}{'flagged':>9}{'of':>5}{'share':>8}{'larger flagged':>16}{'of':>5}   sharpness quartiles")
    out: dict[str, object] = {"images": len(paths), "larger": n_large}
    for radius, rs in rows.items():
        label = f"GaussianBlur({radius})" if radius else "original"
        quartiles = statistics.quantiles([s for *_, s in rs], n=4)
        print(f"{label:<18}{count(rs):>9}{len(rs):>5}{count(rs) / len(rs):>8.1%}{count(rs, True):>16}{n_large:>5}   "
              + " / ".join(f"{q:.2f}" for q in quartiles))
        out[label] = {"flagged": count(rs), "larger_flagged": count(rs, True), "sharpness_quartiles": quartiles}
    return out


def check_hd(name: str, originals: Iterable[Image.Image]) -> tuple[dict[str, object], list[bytes]]:
    """Flags on 1080p originals and their copies (COPIES_1080); returns the figures and the originals' JPEG bytes."""
    rows: dict[str, list[tuple[bool, int, float, float]]] = {label: [] for label, *_ in COPIES_1080}
    datas = []
    for img in originals:
        blurred = {r: img.filter(ImageFilter.GaussianBlur(r)) if r else img for r in {r for _, r, _, _ in COPIES_1080}}
        for label, radius, quality, noise in COPIES_1080:
            rows[label].append(flagged(data := jpeg(blurred[radius], quality, noise)))
            datas += [data] if label == "original" else []
    if datas:
        print(f"{name:<24}" + "".join(f"{f'{count(rs)}/{len(rs)}':>10}" for rs in rows.values()))
    return {label: {"flagged": count(rs), "of": len(rs), "sharpness_max": max((s for *_, s in rs), default=None)}
            for label, rs in rows.items()}, datas


def timings(datas: list[bytes], repeat: int = 5) -> dict[str, float]:
    """Best-of-`repeat` ms per image: image_signals with blur on the thumbnail (as before) and on the decode (now),
    and the whole per-image step (decode_with_facts) for scale."""
    from curation.inference.imaging import decode_image

    decoded = [decode_image(d, min_side=WORK_SIDE) for d in datas]
    thumbs = [working_copy(d.image) for d in decoded]
    runs: dict[str, Callable[[], object]] = {
        "signals, blur on thumbnail": lambda: [image_signals(t, d.width, d.height, detail=t)
                                               for d, t in zip(decoded, thumbs, strict=True)],
        "signals, blur on decode": lambda: [image_signals(t, d.width, d.height, detail=d.image)
                                            for d, t in zip(decoded, thumbs, strict=True)],
        "decode_with_facts": lambda: [decode_with_facts(d, WORK_SIDE) for d in datas],
    }
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeat):
        for key, run in runs.items():
            start = time.perf_counter()
            run()
            best[key] = min(best[key], (time.perf_counter() - start) * 1e3 / len(datas))
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--real", type=Path, action="append",
                    help="a folder of photos (or with an images/ folder); repeatable; default real-dev and real-train")
    ap.add_argument("--synthetic", type=int, default=8, help="synthetic 1080p scenes per kind")
    args = ap.parse_args()
    folders = args.real or [DATASETS / "real-dev", DATASETS / "real-train"]
    result: dict[str, object] = {"started": datetime.now().isoformat(timespec="seconds")}
    paths = []
    for folder in folders:
        images = folder / "images" if (folder / "images").is_dir() else folder
        found = sorted(p for p in images.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        if found:
            result[f"own size {folder.name}"] = check_own_size(folder, found)
        else:
            print(f"no photos under {images}")
        paths += found

    # Generators: one 1080p frame (6 MB) in memory at a time.
    upscaled = (hd for hd in (to_hd(Image.open(p).convert("RGB")) for p in paths) if hd is not None)
    rng = np.random.default_rng(0)
    synthetic = (make(rng) for _ in range(args.synthetic) for make in SCENES.values())
    print(f"\n== 2. 1920 x 1080 JPEGs, flagged blurry / images ({', '.join(SCENES)} for synthetic)")
    print(f"{'set':<24}" + "".join(f"{label:>10}" for label, *_ in COPIES_1080))
    datas = []
    for name, images in (("real photos, upscaled", upscaled), ("synthetic", synthetic)):
        result[f"1080p {name}"], made = check_hd(name, images)
        datas += made[:20]

    if datas:
        ms = timings(datas)
        added = ms["signals, blur on decode"] - ms["signals, blur on thumbnail"]
        print("\n== 3. ms per 1080p image (1/4 draft decode), one thread: "
              + ", ".join(f"{k} {v:.2f}" for k, v in ms.items()) + f"; blur on the decode adds {added:.2f}")
        result["ms_per_1080p_image"] = {**ms, "added": added}
    support.write_result("blur-flags", result)


if __name__ == "__main__":
    main()
