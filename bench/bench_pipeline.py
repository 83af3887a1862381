"""Curation throughput end to end, through Prefect and as plain calls, and what Prefect adds.

Usage:
    python bench/bench_pipeline.py                  # N=1000, two pairs of runs (a few minutes on 2 cores)
    python bench/bench_pipeline.py --n 10000        # the full run
    python bench/bench_pipeline.py --repeat 1 --poll-interval 2

N synthetic 1920x1080 JPEGs from a local folder, one embedded service, the default model, all in this process:
  prefect  Curation(...).curate_dataset(..., wait=True): the curate-dataset and track-curation flows, ephemeral
           Prefect in a private PREFECT_HOME
  plain    the same steps as plain library calls, tracked by curation.tracking.track_plain
After an untimed warm-up (Prefect's temporary server, a curation of 240 images each way, a 5,000-row layout) they run in
ABBA order (prefect, plain, plain, prefect, ...) so that a load drifting linearly cancels out. Per run: wall,
images/s, CPU of this process and of its children (service workers, Prefect's server), peak RSS. Prints a table
and the Prefect / plain ratios; writes bench/results/pipeline-<N>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import support

MODES = {"prefect": "through Prefect", "plain": "as plain calls"}


def summarise(n: int, runs: list[dict]) -> dict[str, object]:
    mean = lambda key: sum(r[key] for r in runs) / len(runs)
    return {"seconds": mean("seconds"), "images_per_s": n / mean("seconds"), "cpu_s": mean("cpu_s"),
            "children_cpu_s": mean("children_cpu_s"), "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "children_peak_rss_mb": max(r["children_peak_rss_mb"] for r in runs), "runs": runs}


def print_tables(res: dict) -> None:
    n, cores = res["n"], os.cpu_count() or 1
    rows = []
    for mode in MODES:
        r = res[mode]
        cpu = r["cpu_s"] + r["children_cpu_s"]
        rows.append([f"pipeline {mode}", f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}", f"{r['cpu_s']:.1f}",
                     f"{r['children_cpu_s']:.1f}", f"{cpu / (r['seconds'] * cores):.0%}", f"{r['peak_rss_mb']:.0f}",
                     f"{r['children_peak_rss_mb']:.0f}"])
    support.print_table(
        f"pipeline, N={n} synthetic 1920x1080 JPEGs, local folder, {cores} cores, poll interval "
        f"{res['poll_interval_s']} s (mean of {len(res['prefect']['runs'])} runs per mode)",
        ["run", "seconds", "img/s", "CPU s", "children CPU s", "cpu util", "peak RSS MB", "children peak MB"], rows)
    print("runs: " + "; ".join(f"{m} " + ", ".join(f"{r['seconds']:.1f}s" for r in res[m]["runs"]) for m in MODES))
    print(f"Prefect / plain: {res['ratio_wall']:.3f}x wall ({res['prefect']['seconds'] - res['plain']['seconds']:+.1f} s), "
          f"{res['ratio_cpu']:.3f}x CPU (this process and its children)")
    print("plain run, seconds from its start: " + ", ".join(f"{k} {v:.1f}" for k, v in res["plain_timeline_s"].items()))
    w = res["warmup"]
    print(f"untimed warm-up: Prefect's temporary server {w['prefect_server_s']:.1f} s; a curation of "
          f"{support.WARMUP_IMAGES} images as plain calls {w['plain_s']:.1f} s, through Prefect {w['prefect_s']:.1f} s; "
          f"a 5,000-row layout {w['layout_s']:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images (default 1000; 10000 for the full run)")
    ap.add_argument("--repeat", type=int, default=2, help="prefect/plain pairs, in ABBA order (default 2)")
    ap.add_argument("--poll-interval", type=float, default=None, help="override CURATION_POLL_INTERVAL_S")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    ap.add_argument("--tmp", type=Path, default=support.RESULTS, help="parent of the temporary data root")
    args = ap.parse_args()
    n = args.n
    args.tmp.mkdir(parents=True, exist_ok=True)
    paths = support.image_cache(max(n, support.WARMUP_IMAGES), args.cache)
    folder = support.dataset_folder(paths[:n], "main", args.cache)
    warm = support.dataset_folder(paths[: support.WARMUP_IMAGES], "warm", args.cache)
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.tmp))
    support.prepare_prefect(work / "prefect-home")
    res: dict = {"n": n, **support.machine()}
    try:
        from curation.inference.service.server import service_for
        from curation.ingest.storage import LocalStorageConfig

        with service_for(support.bench_settings(work / "data", args.poll_interval)) as settings:  # one for all runs
            res["poll_interval_s"] = settings.poll_interval_s
            print("warm-up (untimed): Prefect's temporary server, the service's workers, imports and JIT ...", flush=True)
            res["warmup"] = {"prefect_server_s": support.warm_prefect()}
            for mode, curate in (("plain", support.curate_plain), ("prefect", support.curate_prefect)):
                t0 = time.perf_counter()
                curate(settings, LocalStorageConfig(path=warm), f"warm-up-{mode}")
                res["warmup"][f"{mode}_s"] = time.perf_counter() - t0
            res["warmup"]["layout_s"] = support.warm_layout()
            support.read_into_page_cache(paths[:n])

            order = (["prefect", "plain", "plain", "prefect"] * args.repeat)[: 2 * args.repeat]
            runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
            config = LocalStorageConfig(path=folder)
            for i, mode in enumerate(order):
                print(f"[{i + 1}/{len(order)}] {n} images {MODES[mode]} ...", flush=True)
                marks: dict[str, float] = {}
                with support.Meter() as m:
                    if mode == "prefect":
                        dataset_id = support.curate_prefect(settings, config, f"bench-{mode}-{n}-{i}")
                    else:
                        dataset_id = support.curate_plain(settings, config, f"bench-{mode}-{n}-{i}", marks)
                runs[mode].append({**m.as_dict(), **support.check_done(settings, dataset_id, n),
                                   **({"timeline_s": marks} if marks else {})})
                print(f"      {m.wall:.1f} s, {n / m.wall:.1f} img/s, load {os.getloadavg()[0]:.1f}", flush=True)
                support.checkpoint(f"pipeline-{n}", {**res, "runs": runs})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    for mode in MODES:
        res[mode] = summarise(n, runs[mode])
    res["plain_timeline_s"] = runs["plain"][0]["timeline_s"]
    res["ratio_wall"] = res["prefect"]["seconds"] / res["plain"]["seconds"]
    cpu = {m: res[m]["cpu_s"] + res[m]["children_cpu_s"] for m in MODES}
    res["ratio_cpu"] = cpu["prefect"] / cpu["plain"]
    print_tables(res)
    support.write_result(f"pipeline-{n}", res)


if __name__ == "__main__":
    main()
