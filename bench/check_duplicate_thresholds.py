"""Where near-duplicate thresholds belong in a backend's embedding space, measured on real photos.

Usage:
    python bench/check_duplicate_thresholds.py                 # ../shared/datasets real photos, cnn and fast
    python bench/check_duplicate_thresholds.py --backend cnn --labelled DIR ...

For every photo it makes copies a user would call duplicates (a 75 %-size JPEG-70 re-encode, a 50 % resize, a 90 %
centre crop, +15 % brightness) and prints percentiles of the cosine distance from each copy to its original, then
the distance from each original to its nearest OTHER photo. A threshold belongs between the two: above the copies
it must catch, below the distinct photos it must not merge. Then the share of copies and of distinct nearest pairs
that curation.analysis.analytics's thresholds for the backend's embedding would call near-duplicates on distance alone.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.analysis.analytics import thresholds_for
from curation.inference.models.backends import load_backend
from curation.inference.models.labelled import load_labelled, shared_sets


def _jpeg(im: Image.Image, scale: float, quality: int) -> Image.Image:
    small = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))), Image.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _crop(im: Image.Image, keep: float) -> Image.Image:
    dx, dy = int(im.width * (1 - keep) / 2), int(im.height * (1 - keep) / 2)
    return im.crop((dx, dy, im.width - dx, im.height - dy))


COPIES = {
    "75% JPEG-70": lambda im: _jpeg(im, 0.75, 70),
    "50% resize": lambda im: _jpeg(im, 0.5, 92),
    "90% crop": lambda im: _crop(im, 0.9),
    "+15% bright": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
}


def _embed(backend, images: list[Image.Image]) -> np.ndarray:
    return np.stack([p.embedding for s in range(0, len(images), 32) for p in backend.predict(images[s:s + 32])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", nargs="*", default=["cnn", "fast"])
    ap.add_argument("--labelled", nargs="*", type=Path, default=None)
    ap.add_argument("--min-side", type=int, default=300, help="only photos at least this large (a 128-px photo's "
                    "half-size copy is a different, blurred image)")
    args = ap.parse_args()
    photos = load_labelled(args.labelled or shared_sets()[:2])
    images = [p.image for p in photos if min(p.image.size) >= args.min_side]
    print(f"{len(images)} real photos of at least {args.min_side} px")
    for name in args.backend:
        backend = load_backend(name)
        limits = thresholds_for(backend.embedding_name)
        base = _embed(backend, images)
        sims = base @ base.T
        np.fill_diagonal(sims, -np.inf)
        distinct = 1.0 - sims.max(axis=1)
        print(f"\n{backend.embedding_name}: embedding_distance {limits.embedding_distance}, "
              f"phash_confirm_distance {limits.phash_confirm_distance}")
        print(f"{'pairs':<26} {'min':>7} {'p1':>7} {'p5':>7} {'p50':>7} {'p95':>7} {'max':>7} {'<=emb':>6}")
        rows = {label: 1.0 - np.sum(base * _embed(backend, [f(im) for im in images]), axis=1)
                for label, f in COPIES.items()}
        rows["nearest distinct photo"] = distinct
        for label, d in rows.items():
            q = np.percentile(d, [0, 1, 5, 50, 95, 100])
            share = float((d <= limits.embedding_distance).mean())
            print(f"{label:<26} " + " ".join(f"{v:7.4f}" for v in q) + f" {share:6.1%}")


if __name__ == "__main__":
    main()
