"""Benchmark compute_sampling on synthetic datasets and print its fidelity against uniform random sampling.

Usage: python bench/bench_sampling.py [--full]
  default  100k (what `make bench` runs; about a minute)
  --full   100k and 1M (the full run; the 1M size needs about 6 GB of memory)
Each size runs in its own subprocess so the peak RSS (ru_maxrss) is per size. Results: bench/results/*.json.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import numpy as np
import polars as pl
import support

from curation.sampling.fidelity import fidelity_report, format_fidelity
from curation.sampling.order import compute_sampling

DIM = 512
CLUSTERS = 300
LABELS = {  # realistic skew; None is a value
    "time": (["day", "night", "dawn_dusk", None], [0.70, 0.18, 0.07, 0.05]),
    "weather": (["clear", "cloudy", "rainy", "foggy", "snowy", None], [0.55, 0.25, 0.1, 0.03, 0.02, 0.05]),
    "road": (["city", "highway", None], [0.6, 0.35, 0.05]),
    "location": (["outside", "inside", None], [0.9, 0.07, 0.03]),
}


def synthetic(n: int, seed: int = 0, duplicate_share: float = 0.02) -> tuple[pl.DataFrame, np.ndarray]:
    """Skewed labels, clustered float32 embeddings (Zipf cluster sizes), planted near-duplicate groups of 2-5."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {"image_id": [f"img{i:08d}" for i in range(n)]}
    for category, (values, p) in LABELS.items():
        codes = rng.choice(len(values), size=n, p=p)
        columns[category] = pl.Series(category, values, dtype=pl.Utf8).gather(codes)
    weights = 1.0 / np.arange(1, CLUSTERS + 1) ** 0.8
    cluster = rng.choice(CLUSTERS, size=n, p=weights / weights.sum())
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    spread = rng.uniform(0.2, 0.6, size=CLUSTERS).astype(np.float32)
    emb = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 50_000):
        stop = min(n, start + 50_000)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32)
        noise *= spread[cluster[start:stop], None]
        emb[start:stop] = centres[cluster[start:stop]] + noise
    group = np.full(n, -1, dtype=np.int64)
    members = rng.permutation(n)[: int(n * duplicate_share)]
    sizes = rng.integers(2, 6, size=len(members))
    frame = pl.DataFrame(columns)
    gid, i = 0, 0
    rep_rows: list[int] = []
    copy_rows: list[int] = []
    while i < len(members):
        head, k = members[i], int(sizes[i])
        copies = members[i + 1 : i + k]
        group[head] = gid
        group[copies] = gid
        rep_rows += [int(head)] * len(copies)
        copy_rows += [int(c) for c in copies]
        gid, i = gid + 1, i + k
    reps, copies = np.array(rep_rows, dtype=np.int64), np.array(copy_rows, dtype=np.int64)
    emb[copies] = emb[reps] + 0.01 * rng.standard_normal((len(copies), DIM), dtype=np.float32)
    frame = frame.with_columns(
        pl.Series("duplicate_group", group).set(pl.Series(group < 0), None),
        pl.Series("quality_score", rng.uniform(0, 1, n), dtype=pl.Float64),
    )
    # copies carry the labels of their representative
    labels = frame.select(list(LABELS))
    patched = labels.with_row_index("row").join(
        pl.DataFrame({"row": copies.astype(np.uint32), "src": reps.astype(np.uint32)}), on="row", how="left"
    )
    src = patched["src"].fill_null(patched["row"]).to_numpy()
    frame = frame.with_columns(labels[src])
    return frame, emb


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    return support.status_kb("self", "VmRSS") / 1024


def run_one(n: int, with_report: bool) -> dict[str, object]:
    t0 = time.perf_counter()
    frame, emb = synthetic(n)
    gen_s = time.perf_counter() - t0
    before = current_rss_mb()
    t0 = time.perf_counter()
    sampling = compute_sampling(frame, emb, seed=0)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    random_s = compute_sampling(frame, None, seed=0, strategy="random")
    random_elapsed = time.perf_counter() - t0
    result: dict[str, object] = {
        "n": n,
        "dim": DIM,
        "generate_s": round(gen_s, 2),
        "compute_sampling_s": round(elapsed, 2),
        "compute_random_s": round(random_elapsed, 3),
        "rss_before_call_mb": round(before, 0),
        "peak_rss_mb": round(rss_mb(), 0),
        "strata": int(sampling["stratum"].n_unique()),
    }
    assert random_s.height == n
    if with_report:
        t0 = time.perf_counter()
        report = fidelity_report(frame, emb, sampling, seeds=5)
        result["fidelity_s"] = round(time.perf_counter() - t0, 1)
        result["fidelity"] = report
        print(format_fidelity(report))
    return result


def main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] == "--one":
        support.emit(run_one(int(argv[2]), with_report=argv[3] == "report"))
        return
    sizes = [100_000, 1_000_000] if "--full" in argv else [100_000]
    results = []
    for n in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "report" if n == 100_000 else "none"],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            print(proc.stdout, proc.stderr)
            raise SystemExit(f"bench at n={n} failed")
        for line in proc.stdout.splitlines():
            if line.startswith(support.CHILD_MARK):
                results.append(json.loads(line[len(support.CHILD_MARK) :]))
            else:
                print(line)
    support.print_table(f"sampling order, {DIM}-d synthetic embeddings",
                        ["n", "strata", "sampling s", "random s", "RSS before MB", "peak RSS MB"],
                        [[f"{r['n']:,}", str(r["strata"]), str(r["compute_sampling_s"]), str(r["compute_random_s"]),
                          str(r["rss_before_call_mb"]), str(r["peak_rss_mb"])] for r in results])
    support.write_result("sampling", results)


if __name__ == "__main__":
    main(sys.argv)
