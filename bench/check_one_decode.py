"""One decode per image in the service: how close the model's outputs stay, and what it saves per image.

Usage:
    python bench/check_one_decode.py                    # the real-photo dev set + 200 synthetic 1920x1080 JPEGs
    python bench/check_one_decode.py --n 400 --repeat 5
    python bench/check_one_decode.py --real DIR         # a folder of real photos (default: shared/datasets/real-dev)

1. Agreement. The default (CPU) model on each image decoded the old way, `decode_image(data, 120)` (a JPEG draft
   decode at the model's input side), and the one-decode way, `at_min_side(decode_image(data, 256), 120)` (the
   thumbnail's draft decode box-reduced to the same size): per category the share of images whose tag (None
   included) is identical and the largest confidence difference; the embedding's cosine similarity (min, median).
   PNGs decode whole either way, so they agree exactly, and so do JPEGs too small for the two decodes to take
   different draft scales (the dev set's 200x200 crops); the last row keeps only JPEGs whose decodes differ.
2. Cost, on one thread with time.thread_time() (other work on a shared machine does not count), ms per image, the
   best of --repeat passes, old and new taking turns, over synthetic 1920x1080 JPEGs (support.image_cache):
     service old   curation.inference.service.jobs.predict_batch without a thumbnail side: decode at 120 + model
     service new   predict_batch with thumbnail side 256: decode_with_facts (decode at 256, quality signals, phash,
                   thumbnail resize + JPEG encode, sha256) + at_min_side + model
     pipeline old  service old + the pipeline's own thumbnail step (decode_with_facts at 256 on its second decode)
   and the steps alone. Batches of 16 as the service runs them.
Writes bench/results/one-decode-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import support
from support import REPO, THUMB

BATCH = 16


def agreement(paths: list[Path]) -> dict[str, object]:
    """Old vs one-decode model outputs over the images that decode."""
    import numpy as np

    from curation.inference.imaging import ImageDecodeError, at_min_side, decode_image
    from curation.inference.models.cpu import CpuModel

    model = CpuModel()
    side = model.input_side
    same: dict[str, int] = {}
    conf: dict[str, float] = {}
    cosines: list[float] = []
    for path in paths:
        data = path.read_bytes()
        try:
            [old] = model.predict([decode_image(data, min_side=side).image])
            [new] = model.predict([at_min_side(decode_image(data, min_side=THUMB), side)])
        except ImageDecodeError:
            continue
        for category, (label, p) in old.tags.items():
            same[category] = same.get(category, 0) + (new.tags[category][0] == label)
            conf[category] = max(conf.get(category, 0.0), abs(new.tags[category][1] - p))
        a, b = old.embedding.astype(np.float64), new.embedding.astype(np.float64)
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    n = len(cosines)
    return {
        "images": n,
        "same_tag": {c: same[c] / n for c in same},
        "max_confidence_diff": conf,
        "cosine_min": min(cosines) if n else None,
        "cosine_median": statistics.median(cosines) if n else None,
    }


def costs(paths: list[Path], repeat: int) -> dict[str, float]:
    """ms per image of each variant, best of `repeat` passes, the variants taking turns."""
    from curation.inference.imaging import at_min_side, decode_image
    from curation.inference.models.cpu import CpuModel
    from curation.inference.service.jobs import predict_batch
    from curation.inference.thumbnails import decode_with_facts

    model = CpuModel()
    side = model.input_side
    blobs = [p.read_bytes() for p in paths]
    made = [decode_with_facts(d, THUMB) for d in blobs]
    old_inputs = [decode_image(d, min_side=side).image for d in blobs]

    def batches(items: list) -> list[list]:
        return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]

    old_work = batches([(model, d, side, None) for d in blobs])
    new_work = batches([(model, d, side, THUMB) for d in blobs])
    variants = {
        "service old (predict_batch, no thumbnail side)": lambda: [predict_batch(w) for w in old_work],
        "service new (predict_batch, thumbnail side 256)": lambda: [predict_batch(w) for w in new_work],
        "step: decode at 120": lambda: [decode_image(d, min_side=side) for d in blobs],
        "step: decode_with_facts at 256": lambda: [decode_with_facts(d, THUMB) for d in blobs],
        "step: at_min_side 256 -> 120": lambda: [at_min_side(m.decoded, side) for m in made],
        "step: model predict (old input)": lambda: [model.predict(b) for b in batches(old_inputs)],
    }
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(repeat):
        for name, run in variants.items():
            t = time.thread_time()
            run()
            best[name] = min(best[name], (time.thread_time() - t) * 1000 / len(blobs))
    best["pipeline old (service old + its own decode_with_facts)"] = (
        best["service old (predict_batch, no thumbnail side)"] + best["step: decode_with_facts at 256"]
    )
    return best


def _scales_differ(path: Path) -> bool:
    """Whether the draft decodes at 120 and at 256 differ (else the one-decode path is the old decode itself)."""
    from PIL import Image

    from curation.inference.imaging import draft_scale

    with Image.open(path) as img:
        return draft_scale(*img.size, 120) != draft_scale(*img.size, THUMB)


def real_images(folder: Path) -> list[Path]:
    folder = folder / "images" if (folder / "images").is_dir() else folder
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="synthetic 1920x1080 JPEGs to time (default 200)")
    ap.add_argument("--repeat", type=int, default=3, help="timing passes; the best counts (default 3)")
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "datasets" / "real-dev",
                    help="a folder of real photos, or one holding images/ (default: shared/datasets/real-dev)")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where synthetic images are kept")
    args = ap.parse_args()

    synthetic = support.image_cache(args.n, args.cache)
    result: dict[str, object] = {"n": args.n, "repeat": args.repeat, "agreement": {}}
    sets = {"synthetic 1920x1080 JPEGs": synthetic}
    if args.real.exists():
        real = real_images(args.real)
        sets["real photos, all"] = real
        jpegs = [p for p in real if p.suffix.lower() in {".jpg", ".jpeg"}]
        sets["real photos, JPEG only"] = jpegs
        sets["real JPEGs whose two decodes differ"] = [p for p in jpegs if _scales_differ(p)]
    for name, paths in sets.items():
        result["agreement"][name] = agreement(paths)

    categories = list(next(iter(result["agreement"].values()))["same_tag"])
    print(f"\n== model outputs: decode_image(data, 120) vs at_min_side(decode_image(data, {THUMB}), 120), CPU model")
    head = ["images", "n", *(f"same {c}" for c in categories), "max |dconf|", "cos min", "cos median",
            "1-cos median"]
    print(" | ".join(head))
    for name, a in result["agreement"].items():
        cells = [name, str(a["images"]), *(f"{a['same_tag'][c]:.3f}" for c in categories),
                 f"{max(a['max_confidence_diff'].values()):.4f}", f"{a['cosine_min']:.6f}", f"{a['cosine_median']:.6f}",
                 f"{1 - a['cosine_median']:.1e}"]
        print(" | ".join(cells))

    result["ms_per_image"] = costs(synthetic, args.repeat)
    print(f"\n== ms per image on one thread (thread CPU), {args.n} synthetic 1920x1080 JPEGs, best of {args.repeat}")
    for name, ms in result["ms_per_image"].items():
        print(f"{name:<58} {ms:7.2f}")
    ms = result["ms_per_image"]
    new = ms["service new (predict_batch, thumbnail side 256)"]
    print(f"\nservice new / service old: {new / ms['service old (predict_batch, no thumbnail side)']:.2f}x; "
          f"service new / pipeline old: {new / ms['pipeline old (service old + its own decode_with_facts)']:.2f}x")

    support.write_result("one-decode", result)


if __name__ == "__main__":
    main()
