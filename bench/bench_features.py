"""Per-image CPU cost of the two per-image feature steps, before and after issue #7's rewrite, and how far they moved.

Usage:
    python bench/bench_features.py                      # 40 synthetic images + the real-photo dev set (< 1 minute)
    python bench/bench_features.py --n 200 --repeat 5
    python bench/bench_features.py --real DIR           # a folder of real photos (default: shared/datasets/real-dev)

Measures, on one thread with time.thread_time() (so other work on a shared machine does not count), the best of
--repeat passes over the images (before and after taking turns), in ms per image:
  image_signals    curation.analysis.quality.image_signals on the thumbnail step's decode (JPEG draft for a 256-px short
                   side: 480x270 for the synthetic 1920x1080 JPEGs of bench/results/cache, as support.image_cache makes)
  cpu extract      curation.inference.models.cpu_features.extract on the service's decode (draft for CpuModel.input_side)
  cpu predict      CpuModel.predict on the same images (extract plus the rules; before: the old extract + rules)
"Before" is the same code at BASELINE (the commit before the rewrite), loaded from git history into a temporary
module; without git history the table has the "after" column only. Then the largest deviations between them:
signals (relative), phash (bits), quality flags, embedding (absolute), scene statistics (absolute) and tags.
Writes bench/results/features-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import support
from support import REPO

BASELINE = "9db7be8f032156f7dd2d91b610c35987650a11d7"  # before issue #7's rewrite of quality.py and cpu_features.py


def load_baseline(rev: str) -> tuple[object, object] | None:
    """(quality, cpu_features) as they were at rev, as temporary modules; None without git history."""
    mods = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-features-"))
    for name, path in (("quality_before", "curation/quality.py"),  # their paths at rev, before the reorganisation
                       ("cpu_features_before", "curation/models/cpu_features.py")):
        try:
            src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True, capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        (tmp / f"{name}.py").write_bytes(src)
        spec = importlib.util.spec_from_file_location(name, tmp / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up
        spec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


def decode_all(paths: list[Path], thumb: int, model_side: int) -> tuple[list, list]:
    from curation.inference.imaging import ImageDecodeError, decode_image

    signals, model = [], []
    for p in paths:
        data = p.read_bytes()
        try:
            signals.append(decode_image(data, min_side=thumb))
            model.append(decode_image(data, min_side=model_side).image)
        except ImageDecodeError:
            continue
    return signals, model


def per_image_ms(timings: dict[str, tuple], repeat: int) -> dict[str, float]:
    """Best ms per image of each (fn, items), the variants taking turns, so load changes hit them alike."""
    best = dict.fromkeys(timings, float("inf"))
    for _ in range(repeat):
        for name, (fn, items) in timings.items():
            t = time.thread_time()
            for it in items:
                fn(it)
            best[name] = min(best[name], time.thread_time() - t)
    return {name: 1000 * v / max(len(timings[name][1]), 1) for name, v in best.items()}


def deviations(before: tuple, signals: list, model: list) -> dict[str, float | int]:
    """Largest differences between the baseline's outputs and today's on these images."""
    import numpy as np

    from curation.analysis.quality import image_signals, quality_flags
    from curation.inference.models import cpu_features
    from curation.inference.models.cpu import CpuModel

    q0, f0 = before
    dev: dict[str, float | int] = {"signal_rel": 0.0, "phash_bits": 0, "flags_differ": 0,
                                   "embedding_abs": 0.0, "stats_abs": 0.0, "tags_differ": 0,
                                   "confidence_abs": 0.0}
    for d in signals:
        a, b = q0.image_signals(d.image, d.width, d.height), image_signals(d.image, d.width, d.height)
        for k, v in a.items():
            if k != "phash" and v != b[k]:
                dev["signal_rel"] = max(dev["signal_rel"], abs(v - b[k]) / max(abs(v), 1e-12))
        dev["phash_bits"] = max(dev["phash_bits"], bin((a["phash"] ^ b["phash"]) & (2**64 - 1)).count("1"))
        dev["flags_differ"] += q0.quality_flags(a, d.width, d.height) != quality_flags(b, d.width, d.height)
    model_now = CpuModel()
    for im in model:
        a, b = f0.extract(im), cpu_features.extract(im)
        dev["embedding_abs"] = max(dev["embedding_abs"], float(np.abs(a.embedding - b.embedding).max()))
        dev["stats_abs"] = max(dev["stats_abs"], max(abs(a.stats[k] - b.stats[k]) for k in a.stats))
        ta, tb = model_now._tags(a.stats), model_now._tags(b.stats)
        dev["tags_differ"] += any(ta[c][0] != tb[c][0] for c in ta)
        dev["confidence_abs"] = max(dev["confidence_abs"], max(abs(ta[c][1] - tb[c][1]) for c in ta))
    return dev


def run_set(label: str, paths: list[Path], before: tuple | None, repeat: int) -> dict:
    from curation.analysis.quality import image_signals
    from curation.inference.models import cpu_features
    from curation.inference.models.cpu import CpuModel

    model = CpuModel()
    signals, images = decode_all(paths, support.THUMB, model.input_side)
    row: dict = {"set": label, "images": len(signals), "signal_input": "x".join(map(str, signals[0].image.size)),
                 "model_input": "x".join(map(str, images[0].size))}
    timings = {"image_signals after": (lambda d: image_signals(d.image, d.width, d.height), signals),
               "cpu extract after": (cpu_features.extract, images),
               "cpu predict after": (lambda im: model.predict([im]), images)}
    if before is not None:
        q0, f0 = before
        timings["image_signals before"] = (lambda d: q0.image_signals(d.image, d.width, d.height), signals)
        timings["cpu extract before"] = (f0.extract, images)
        timings["cpu predict before"] = (lambda im: model._tags(f0.extract(im).stats), images)
    row.update(per_image_ms(timings, repeat))
    if before is not None:
        row["deviations"] = deviations(before, signals, images)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40, help="synthetic 1920x1080 JPEGs (default 40)")
    ap.add_argument("--repeat", type=int, default=3, help="passes per measurement; the best counts (default 3)")
    ap.add_argument("--real", type=Path, default=REPO.parent / "shared" / "datasets" / "real-dev",
                    help="a folder of real photos, or one holding images/ (default: shared/datasets/real-dev)")
    ap.add_argument("--baseline", default=BASELINE, help="git revision of the 'before' code")
    args = ap.parse_args()

    before = load_baseline(args.baseline)
    sets = [("synthetic 1920x1080", support.image_cache(args.n))]
    real = args.real / "images" if (args.real / "images").is_dir() else args.real
    if real.is_dir():
        photos = sorted(p for p in real.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})
        sets.append((f"real ({real.parent.name if real.name == 'images' else real.name})", photos))
    else:
        print(f"(no real photos at {real}; synthetic only)")
    rows = [run_set(label, paths, before, args.repeat) for label, paths in sets]

    print(f"ms per image, one thread (time.thread_time), best of {args.repeat}; before = {args.baseline[:10]}"
          + ("" if before else " (no git history: after only)"))
    print(f"{'set':24s} {'n':>4s}  {'step':14s} {'before':>7s} {'after':>7s} {'speed-up':>8s}")
    for r in rows:
        for step in ("image_signals", "cpu extract", "cpu predict"):
            b, a = r.get(f"{step} before"), r[f"{step} after"]
            print(f"{r['set']:24s} {r['images']:4d}  {step:14s} {b if b else float('nan'):7.2f} {a:7.2f} "
                  + (f"{b / a:7.1f}x" if b else ""))
        if "deviations" in r:
            d = r["deviations"]
            print(f"  max deviation: signals rel {d['signal_rel']:.1e}, phash {d['phash_bits']} bits, "
                  f"flags differ on {d['flags_differ']}, embedding abs {d['embedding_abs']:.1e}, "
                  f"stats abs {d['stats_abs']:.1e}, tags differ on {d['tags_differ']} "
                  f"(confidence abs {d['confidence_abs']:.1e})")
    support.write_result("features", {"repeat": args.repeat, "baseline": args.baseline, "sets": rows})


if __name__ == "__main__":
    main()
