"""Wall time of the whole-dataset analytics on synthetic clustered embeddings (default 100k x 512-d).

Usage: python bench/bench_analytics.py [N] [DIM]
Prints a table and writes bench/results/analytics-<N>.json. Targets on the 2-core machine: analyse() under 60 s,
analyse() plus layout_3d() under 5 min. layout_3d fits UMAP on a 20k subsample after PCA to 50-d and transforms
the rest (see curation/layout.py).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.analytics import analyse  # noqa: E402
from curation.layout import layout_3d  # noqa: E402


def synthetic(n: int, dim: int, seed: int = 0) -> dict[str, object]:
    """Clustered unit embeddings plus hashes and signals, with 1 % exact and 1 % near duplicates planted."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (200, dim)).astype(np.float32)
    emb = centres[rng.integers(0, 200, n)] + rng.normal(0, 0.7, (n, dim)).astype(np.float32)
    phash = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    hashes = [f"{i:064x}" for i in range(n)]
    dup = rng.choice(n, n // 50, replace=False)
    src, dst = dup[: n // 100], dup[n // 100 :]
    for a, b in zip(src[: len(src) // 2], dst[: len(src) // 2]):  # exact copies
        emb[b], phash[b], hashes[b] = emb[a], phash[a], hashes[a]
    for a, b in zip(src[len(src) // 2 :], dst[len(src) // 2 :]):  # re-encoded copies: 2 bits flipped
        emb[b] = emb[a] + rng.normal(0, 0.02, dim)
        phash[b] = phash[a] ^ 0b101
    signals = pl.DataFrame(
        {
            "brightness": rng.uniform(0.1, 0.9, n), "luma_p05": rng.uniform(0.0, 0.3, n),
            "luma_p99": rng.uniform(0.5, 1.0, n), "contrast": rng.uniform(0.05, 0.3, n),
            "blur": rng.lognormal(5, 1.5, n), "sharpness": rng.lognormal(-2, 1, n), "entropy": rng.uniform(4, 8, n),
            "colourfulness": rng.uniform(0, 100, n), "saturation": rng.uniform(0, 0.5, n),
            "chroma_p99": rng.uniform(0, 0.9, n), "aspect_ratio": np.full(n, 0.5625), "megapixels": np.full(n, 0.92),
            "phash": phash, "width": np.full(n, 1280), "height": np.full(n, 720),
        }
    )
    return {"ids": [f"{i:016x}" for i in range(n)], "emb": emb, "hashes": hashes, "phash": phash.tolist(),
            "signals": signals}


def main(argv: list[str]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 100_000
    dim = int(argv[2]) if len(argv) > 2 else 512
    data = synthetic(n, dim)
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    frame = analyse(data["ids"], data["emb"], data["hashes"], data["phash"], data["signals"], k=10, seed=0)
    t_analyse, c_analyse = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    coords = layout_3d(data["emb"], seed=0)
    t_layout, c_layout = time.perf_counter() - t0, time.process_time() - c0
    grouped = frame.filter(pl.col("duplicate_group").is_not_null())
    result = {
        "n": n, "dim": dim, "cpus": os.cpu_count(), "machine": platform.machine(),
        "analyse_s": round(t_analyse, 1), "layout_s": round(t_layout, 1), "total_s": round(t_analyse + t_layout, 1),
        "analyse_cpu_s": round(c_analyse, 1), "layout_cpu_s": round(c_layout, 1),
        "load_average_before": round(load_before, 2), "load_average_after": round(os.getloadavg()[0], 2),
        "duplicate_groups": grouped["duplicate_group"].n_unique(), "images_in_groups": grouped.height,
        "planted_duplicate_pairs": n // 100, "layout_finite": bool(np.isfinite(coords).all()),
        "targets": {"analyse_s": 60, "total_s": 300},
    }
    print(f"{'step':<28}{'wall s':>10}{'cpu s':>10}{'target s':>10}")
    print(f"{'analyse (kNN, dups, flags)':<28}{t_analyse:>10.1f}{c_analyse:>10.1f}{60:>10}")
    print(f"{'layout_3d (PCA50 + UMAP)':<28}{t_layout:>10.1f}{c_layout:>10.1f}{'':>10}")
    print(f"{'total':<28}{t_analyse + t_layout:>10.1f}{c_analyse + c_layout:>10.1f}{300:>10}")
    print(f"load average (1 min) before/after: {result['load_average_before']} / {result['load_average_after']}")
    print(f"{n} x {dim}: {result['duplicate_groups']} duplicate groups, {result['images_in_groups']} images "
          f"({n // 100} planted pairs)")
    out = Path(__file__).resolve().parent / "results" / f"analytics-{n}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
