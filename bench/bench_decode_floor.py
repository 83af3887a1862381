"""The machine's decode floor: how fast Pillow alone turns 1080p JPEGs into 256-px thumbnails on every core.

Usage:
    python bench/bench_decode_floor.py              # N=1000, 3 runs
    python bench/bench_decode_floor.py --n 10000    # the size of the full pipeline run

Each synthetic 1920x1080 JPEG is read, decoded once in draft mode for a 256-px short side (as curation.inference.imaging
does), reduced to a 256-px thumbnail and encoded, in a pool of os.cpu_count() processes started before the clock.
No curation can be faster on this machine: compare bench_pipeline.py's images/s with this floor's, measured close
in time. Prints a table (wall, images/s, CPU) and writes bench/results/decode-floor-<N>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import support


def _noop(x: int) -> int:
    return x


def decode_floor(paths: list[Path]) -> dict[str, float]:
    """One pass over the images in a fresh pool: wall seconds, images/s and the workers' CPU seconds."""
    workers = os.cpu_count() or 1
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_noop, range(workers * 4)))  # workers started and imported before the clock
        pool.submit(support.thumbnail_floor, str(paths[0])).result()
        t0 = time.perf_counter()
        list(pool.map(support.thumbnail_floor, [str(p) for p in paths], chunksize=8))
        wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers have exited: their CPU is counted
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"seconds": wall, "images_per_s": len(paths) / wall, "cpu_s": cpu, "workers": workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="passes, each in a fresh pool (default 3)")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    args = ap.parse_args()
    paths = support.image_cache(args.n, args.cache)
    support.read_into_page_cache(paths)
    res: dict = {"n": args.n, **support.machine(), "runs": []}
    for i in range(args.repeat):
        res["runs"].append(decode_floor(paths))
        print(f"[{i + 1}/{args.repeat}] {res['runs'][-1]['seconds']:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    runs = res["runs"]
    res["seconds"] = sum(r["seconds"] for r in runs) / len(runs)
    res["images_per_s"] = args.n / res["seconds"]
    res["cpu_s"] = sum(r["cpu_s"] for r in runs) / len(runs)
    rows = [[f"run {i + 1}", f"{r['seconds']:.2f}", f"{r['images_per_s']:.0f}", f"{r['cpu_s']:.1f}",
             f"{1000 * r['cpu_s'] / args.n:.1f}"] for i, r in enumerate(runs)]
    rows.append(["mean", f"{res['seconds']:.2f}", f"{res['images_per_s']:.0f}", f"{res['cpu_s']:.1f}",
                 f"{1000 * res['cpu_s'] / args.n:.1f}"])
    support.print_table(f"decode floor, N={args.n} synthetic 1920x1080 JPEGs -> 256-px thumbnails, "
                        f"{runs[0]['workers']} processes", ["pass", "seconds", "img/s", "CPU s", "CPU ms/img"], rows)
    support.write_result(f"decode-floor-{args.n}", res)


if __name__ == "__main__":
    main()
