"""Wall time and peak memory of the whole-dataset analytics on synthetic clustered embeddings.

Usage:
    python bench/bench_analytics.py                          # quick: 20k x 512-d (under a minute)
    python bench/bench_analytics.py --n 100000 1000000       # the full run: 100k and 1M rows
    python bench/bench_analytics.py --n 300000 --no-layout   # analyse() only
    python bench/bench_analytics.py --dim 216                # the CPU backend's embedding size

Each size runs in a fresh child process (so its peak RSS is its own) and measures:
  analyse()    curation.analysis.analytics.analyse on ALL rows: kNN (exact brute force up to 20k rows, faiss HNSW above) for
               similar images and the anomaly score, exact + near-duplicate groups (planted: 1 % exact copies and
               1 % re-encoded copies), quality scores and flags from synthetic signals. Split into kNN, quality and
               the rest (duplicates, anomaly, table).
  layout_3d()  curation.analysis.layout.layout_3d: PCA to 50-d fitted on a 20k-row sample and applied to all rows, UMAP
               fitted on that 20k-row sample, and every other row placed with UMAP.transform (all rows get x, y, z).
Targets on the 2-core machine: analyse() under 60 s and analyse() plus layout_3d() under 5 min at 100k.
Prints a table and writes bench/results/analytics-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import polars as pl
import support


def synthetic(n: int, dim: int, seed: int = 0) -> dict[str, object]:
    """Clustered unit embeddings plus hashes and signals, with 1 % exact and 1 % near duplicates planted."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (200, dim)).astype(np.float32)
    emb = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: no float64 n x dim temporary
        stop = min(n, start + 100_000)
        emb[start:stop] = centres[rng.integers(0, 200, stop - start)]
        emb[start:stop] += rng.normal(0, 0.7, (stop - start, dim)).astype(np.float32)
    phash = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64)
    hashes = [f"{i:064x}" for i in range(n)]
    dup = rng.choice(n, n // 50, replace=False)
    src, dst = dup[: n // 100], dup[n // 100 :]
    half = len(src) // 2
    for a, b in zip(src[:half], dst[:half]):  # exact copies
        emb[b], phash[b], hashes[b] = emb[a], phash[a], hashes[a]
    emb[dst[half:]] = emb[src[half:]] + rng.normal(0, 0.02, (len(src) - half, dim)).astype(np.float32)
    phash[dst[half:]] = phash[src[half:]] ^ 0b101  # re-encoded copies: 2 bits flipped
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


def _rss_mb(key: str = "VmRSS") -> float:
    return support.status_kb("self", key) / 1024


def run_one(n: int, dim: int, layout: bool) -> dict[str, object]:
    """One size, in this process: time the steps and read the peak RSS."""
    import curation.analysis.analytics as analytics
    from curation.analysis.layout import UMAP_FIT_MAX, layout_3d

    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    analytics.nearest_neighbours = timed("knn", analytics.nearest_neighbours)
    analytics._quality = timed("quality", analytics._quality)
    t0 = time.perf_counter()
    data = synthetic(n, dim)
    generate_s = time.perf_counter() - t0
    rss_inputs = _rss_mb()
    load_before = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    frame = analytics.analyse(data["ids"], data["emb"], data["hashes"], data["phash"], data["signals"], k=10, seed=0)
    t_analyse, c_analyse = time.perf_counter() - t0, time.process_time() - c0
    peak_analyse = _rss_mb("VmHWM")
    grouped = frame.filter(pl.col("duplicate_group").is_not_null())
    result: dict[str, object] = {
        "n": n, "dim": dim, "generate_s": round(generate_s, 1), "rss_inputs_mb": round(rss_inputs),
        "analyse_s": round(t_analyse, 1), "analyse_cpu_s": round(c_analyse, 1),
        "knn_s": round(spent.get("knn", 0.0), 1), "quality_s": round(spent.get("quality", 0.0), 1),
        "knn_backend": "exact" if n <= analytics.EXACT_KNN_MAX else "hnsw",
        "peak_rss_after_analyse_mb": round(peak_analyse),
        "duplicate_groups": grouped["duplicate_group"].n_unique(), "images_in_groups": grouped.height,
        "planted_duplicate_pairs": n // 100,
    }
    del frame, grouped
    if layout:
        t0, c0 = time.perf_counter(), time.process_time()
        coords = layout_3d(data["emb"], seed=0)
        result.update(layout_s=round(time.perf_counter() - t0, 1), layout_cpu_s=round(time.process_time() - c0, 1),
                      layout_fit_rows=min(n, UMAP_FIT_MAX), layout_finite=bool(np.isfinite(coords).all()))
    result.update(
        total_s=round(t_analyse + float(result.get("layout_s", 0.0)), 1), peak_rss_mb=round(_rss_mb("VmHWM")),
        ru_maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        load_average_before=round(load_before, 2), load_average_after=round(os.getloadavg()[0], 2),
    )
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[20_000], help="rows (full run: 100000 1000000)")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimensions (default 512, CLIP ViT-B-32)")
    ap.add_argument("--no-layout", action="store_true", help="skip layout_3d")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        support.emit(run_one(args.n[0], args.dim, not args.no_layout))
        return
    results = []
    for n in args.n:
        print(f"analytics on {n:,} x {args.dim} synthetic rows in a fresh process ...", flush=True)
        cmd = [__file__, "--one", "--n", str(n), "--dim", str(args.dim)] + (["--no-layout"] if args.no_layout else [])
        results.append(support.run_child(cmd, f"analytics bench at n={n}"))
        r = results[-1]
        print(f"  analyse {r['analyse_s']} s (kNN {r['knn_s']} s), layout {r.get('layout_s', '-')} s, "
              f"peak RSS {r['peak_rss_mb']:,} MiB", flush=True)
    head = ["n", "analyse s", "kNN s", "quality s", "layout s", "total s", "peak RSS MiB", "dup groups", "load"]
    rows = [
        [f"{r['n']:,}", f"{r['analyse_s']}", f"{r['knn_s']} ({r['knn_backend']})", f"{r['quality_s']}",
         f"{r.get('layout_s', '-')}", f"{r['total_s']}", f"{r['peak_rss_mb']:,}",
         f"{r['duplicate_groups']:,}/{r['planted_duplicate_pairs']:,}",
         f"{r['load_average_before']}->{r['load_average_after']}"]
        for r in results
    ]
    support.print_table(f"analytics bench: {args.dim}-d synthetic embeddings, {os.cpu_count()} cores; layout = "
                        "PCA-50 + UMAP fitted on a 20k sample, the rest transformed", head, rows)
    if len(results) > 1:
        a, b = results[0], results[-1]
        print(f"x{b['n'] / a['n']:.0f} rows: analyse x{b['analyse_s'] / max(a['analyse_s'], 0.1):.1f}, "
              f"total x{b['total_s'] / max(a['total_s'], 0.1):.1f}, peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.1f}")
    support.write_result("analytics", {**support.machine(), "runs": results,
                                       "targets_at_100k": {"analyse_s": 60, "total_s": 300}})


if __name__ == "__main__":
    main()
