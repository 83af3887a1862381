"""Peak memory of the curating process as the dataset grows: does it stay flat?

Usage:
    python bench/bench_memory.py                       # quick: N = 1000 and 4000 (about 2 minutes)
    python bench/bench_memory.py --n 10000 100000      # the full run (target: peak at 100k <= 1.5x the peak at 10k)
    python bench/bench_memory.py --n 10000 --keep      # keep the data roots under bench/results/ to inspect them
    python bench/bench_memory.py --components --n 10000 100000   # only the steps after inference, see below

Each N runs in a fresh child process that curates N tiny synthetic JPEGs (64x48, varied content: a colour grid,
blocks and noise per seed, so they are not duplicates) from a local folder through the real Prefect flow,
`Curation(settings=...).curate_dataset(..., wait=True)`, with the embedded service and the default model, under an
ephemeral Prefect with a private PREFECT_HOME. Before the clock starts the child imports everything, runs a
trivial flow (Prefect's temporary server starts) and a 300-point UMAP layout (umap's import and numba JIT, a
fixed cost of a few hundred MiB); that RSS is the baseline. Measured:

  peak RSS      VmHWM of the child (the flow process, which also hosts the embedded service) during the curation,
                reset through /proc/self/clear_refs after the warm-up, so the baseline is included but no warm-up spike
  growth        peak minus baseline: what the dataset itself costs
  server RSS    the peak RSS of the child's own children (Prefect's temporary server), sampled
  phases        the parent samples the child's VmRSS every 0.2 s and splits the samples by phase, whose boundaries are
                the log line of the poll that saw every shard job Completed and the dataset's file times (listing,
                the last thumbnail shard, metadata, embeddings, files, analytics and sampling Parquet)

Prints a table (N, seconds, images/s, baseline, peak, growth, ratio to the smallest N) and the per-phase peaks,
and writes bench/results/memory-<timestamp>.json. Synthetic images are cached under bench/results/cache/.

--components skips images, Prefect and the service: a fresh child per N writes N synthetic thumbnail-shard rows
(256 per shard, random quality signals and hashes), then runs, as plain calls, the steps after inference on N
synthetic results (pages of 1000 JSON-like items with tags and a 216-d embedding as a list of floats, like the
client yields): curation.dataset.results.write_results (with the 3D layout), curation.analysis.analyse.analyse_dataset
and curation.sampling.subsets.sample_dataset, with VmHWM reset before each step (peak per step, baseline included). It measures what the
dataset costs in those steps when a shared machine cannot run the whole flow at 100k in time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import support
from support import REPO, RESULTS, status_kb

W, H = 64, 48
SAMPLE_S = 0.2


# ----------------------------------------------------------------------------------------------------------------
# Synthetic tiny images
# ----------------------------------------------------------------------------------------------------------------


def _make_chunk(args: tuple[int, int, str]) -> None:
    import numpy as np
    from PIL import Image

    start, stop, folder = args
    for i in range(start, stop):
        rng = np.random.default_rng(i)
        grid = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((W, H), Image.BICUBIC)
        blocks = Image.fromarray(rng.integers(0, 256, (int(rng.integers(3, 12)), int(rng.integers(4, 16)), 3),
                                              dtype=np.uint8)).resize((W, H), Image.NEAREST)
        img = Image.blend(grid, blocks, float(rng.uniform(0.1, 0.5)))
        noise = rng.integers(-12, 13, (H, W, 3))
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
        path = Path(folder) / f"{i // 1000:03d}" / f"img_{i:06d}.jpg"
        img.save(path, "JPEG", quality=85)


def tiny_images(n: int, cache: Path) -> Path:
    """A folder of exactly n tiny JPEGs (sub-folders of 1000), generated once and reused by every larger N."""
    src = cache / f"tiny-{W}x{H}"
    done = [i for i in range(0, n, 1000) if (src / f"{i // 1000:03d}" / f"img_{min(i + 999, n - 1):06d}.jpg").exists()]
    todo = [(i, min(i + 1000, n)) for i in range(0, n, 1000) if i not in done]
    if todo:
        t0 = time.perf_counter()
        print(f"generating {sum(b - a for a, b in todo)} tiny {W}x{H} JPEGs into {src} (once) ...", flush=True)
        for a, _ in todo:
            (src / f"{a // 1000:03d}").mkdir(parents=True, exist_ok=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_make_chunk, [(a, b, str(src)) for a, b in todo]))
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    view = cache / f"tiny-view-{n}"  # exactly n images: hard links into the cache
    if view.is_dir() and sum(1 for _ in view.rglob("*.jpg")) == n:
        return view
    shutil.rmtree(view, ignore_errors=True)
    for i in range(n):
        rel = Path(f"{i // 1000:03d}") / f"img_{i:06d}.jpg"
        (view / rel.parent).mkdir(parents=True, exist_ok=True)
        try:
            os.link(src / rel, view / rel)
        except OSError:
            shutil.copyfile(src / rel, view / rel)
    return view


# ----------------------------------------------------------------------------------------------------------------
# The child: one curation in a fresh process
# ----------------------------------------------------------------------------------------------------------------


def child(args: argparse.Namespace) -> None:
    work = Path(args.work)
    support.prepare_prefect(work / "prefect-home")
    from curation import Curation
    from curation.dataset.catalog import Catalog
    from curation.ingest.storage import LocalStorageConfig

    support.warm_prefect()
    support.warm_layout(300, 16)  # umap's import and numba's JIT
    settings = support.bench_settings(work / "data", args.poll_interval)
    baseline_kb = status_kb("self", "VmRSS")
    reset = support.reset_peak()  # VmHWM := VmRSS
    print(f"CHILD-START {time.time():.3f} baseline {baseline_kb / 1024:.0f} MiB", flush=True)
    t0, cpu0 = time.time(), time.process_time()
    dataset_id = Curation(settings=settings).curate_dataset(f"memory-{args.n}", LocalStorageConfig(path=args.folder),
                                                            wait=True)
    t1 = time.time()
    record = Catalog(settings.data_root).dataset(dataset_id).load_record()
    out = {
        "n": args.n, "dataset_id": dataset_id, "t_start": t0, "t_end": t1, "seconds": t1 - t0,
        "cpu_s": time.process_time() - cpu0, "status": record.status.value,
        "counts": record.counts.model_dump(mode="json"), "failure_reason": record.failure_reason,
        "baseline_mb": baseline_kb / 1024, "peak_rss_mb": status_kb("self", "VmHWM") / 1024, "peak_reset": reset,
        "rss_after_mb": status_kb("self", "VmRSS") / 1024,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_root": str(settings.data_root), "shard_size": settings.shard_size,
        "results_page_size": settings.results_page_size,
    }
    support.emit(out)


def component_child(args: argparse.Namespace) -> None:
    """The steps after inference on synthetic data, each with its own peak (see --components in the docstring)."""
    import numpy as np

    from curation.analysis.analyse import analyse_dataset
    from curation.dataset.catalog import Catalog
    from curation.dataset.parquet_io import rows_to_table, shard_schema
    from curation.dataset.results import write_results
    from curation.inference.thumbnails import signal_names
    from curation.sampling.subsets import sample_dataset
    from curation.taxonomy import DEFAULT_TAXONOMY

    support.warm_layout(300, 16)  # umap's import and numba's JIT
    n, work, dataset_id = args.n, Path(args.work), "0123456789abcdef01234567"
    store = Catalog(work).dataset(dataset_id)
    rng = np.random.default_rng(0)
    ids = [f"{i:016x}" for i in range(n)]
    names = [name for name in signal_names() if name != "phash"]
    schema = shard_schema(signal_names())
    for shard, start in enumerate(range(0, n, 256)):
        rows = [{"image_id": i, "blob_name": f"img_{i}.jpg", "size": 1500, "width": 64, "height": 48, "format": "jpeg",
                 "thumbnail": f"t/{i}.jpg", "error": None, "content_hash": f"{int(i, 16):064x}",
                 "phash": int(rng.integers(-(2**62), 2**62)), **{k: float(rng.uniform(0, 1)) for k in names}}
                for i in ids[start : start + 256]]
        store.write_files_shard(shard, rows_to_table(rows, schema))
    centres = rng.normal(size=(50, 216)).astype(np.float32)
    labels = {c: list(v) + [None] for c, v in DEFAULT_TAXONOMY.classes.items()}

    def pages():  # what InferenceClient.iter_results yields: JSON-decoded dicts, embeddings as lists of floats
        for start in range(0, n, 1000):
            block = centres[rng.integers(0, 50, min(1000, n - start))] + rng.normal(0, 0.5, (min(1000, n - start), 216))
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            yield [{"image_id": ids[start + j], "error": None, "embedding": block[j].tolist(),
                    "tags": {c: {"label": v[int(rng.integers(0, len(v)))], "confidence": 0.8} for c, v in labels.items()}}
                   for j in range(len(block))]

    baseline = status_kb("self", "VmRSS") / 1024
    steps = {}
    for name, step in (("results (pages -> Parquet, 3D layout)", lambda: write_results(store, pages(), DEFAULT_TAXONOMY)),
                       ("analytics", lambda: analyse_dataset(store)),
                       ("sampling (+ fidelity report)", lambda: sample_dataset(store))):
        support.reset_peak()
        t0 = time.time()
        step()
        steps[name] = {"seconds": time.time() - t0, "peak_rss_mb": status_kb("self", "VmHWM") / 1024,
                       "rss_after_mb": status_kb("self", "VmRSS") / 1024}
    support.emit({"n": n, "baseline_mb": baseline, "steps": steps})


def run_components(sizes: list[int]) -> None:
    runs = []
    for n in sizes:
        print(f"steps after inference on {n:,} synthetic results in a fresh process ...", flush=True)
        work = Path(tempfile.mkdtemp(prefix=f"bench-memory-components-{n}-", dir=RESULTS))
        try:
            runs.append(support.run_child([__file__, "--component-child", "--n", str(n), "--work", str(work)],
                                          f"component child for N={n}"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    first = runs[0]
    head = ["step"] + [f"{label} N={r['n']:,}" for r in runs for label in ("s", "MiB", "ratio")]
    rows = [["baseline (imports, umap JIT)"] + [c for r in runs for c in ("", f"{r['baseline_mb']:.0f}", "")]]
    for step in first["steps"]:
        cells = [step]
        for r in runs:
            v = r["steps"][step]
            cells += [f"{v['seconds']:.1f}", f"{v['peak_rss_mb']:.0f}",
                      f"{v['peak_rss_mb'] / first['steps'][step]['peak_rss_mb']:.2f}"]
        rows.append(cells)
    support.print_table("steps after inference, synthetic results, plain calls (peak RSS MiB, baseline included; "
                        f"ratio to N={first['n']:,})", head, rows)
    support.write_result("memory-components", {"runs": runs})


# ----------------------------------------------------------------------------------------------------------------
# The parent: run a child per N, sample its memory, split by phase
# ----------------------------------------------------------------------------------------------------------------


def _children_rss_kb(pid: int) -> int:
    total = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    total += status_kb(d.name, "VmRSS")
            except (OSError, IndexError, ValueError):
                continue
    return total


_ALL_SHARDS_DONE = re.compile(r"(\d+)/\1 shard jobs Completed")  # the poll-jobs task's log line


def phase_bounds(res: dict, lines: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """(phase, end time) in order; each phase starts where the previous one ended. The ends are the times of the
    dataset's files and of the log line of the poll that saw every shard job Completed."""
    from curation.dataset.catalog import Catalog, Table

    store = Catalog(Path(res["data_root"])).dataset(res["dataset_id"])

    def mtime(table: Table) -> float | None:
        path = store.table_path(table)
        return path.stat().st_mtime if path.exists() else None

    shards = [s.stat().st_mtime for s in store.files_shards()]
    polled = [t for t, line in lines if _ALL_SHARDS_DONE.search(line)]
    marks = [
        ("start, listing, register", mtime(Table.LISTING)),
        ("inference and storing shards", polled[0] if polled else None),
        ("storing the last shards", max(shards) if shards else None),
        ("results: read stored, metadata", mtime(Table.METADATA)),
        ("results: 3D layout, embeddings", mtime(Table.EMBEDDINGS)),
        ("results: files table", mtime(Table.FILES)),
        ("analytics", mtime(Table.ANALYTICS)),
        ("sampling", mtime(Table.SAMPLING)),
        ("complete, report", res["t_end"]),
    ]
    out, last = [], res["t_start"]
    for name, t in marks:
        if t is not None:
            last = max(last, t)
            out.append((name, last))
    return out


def run_child(n: int, folder: Path, args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-memory-{n}-", dir=RESULTS))
    cmd = [sys.executable, __file__, "--child", "--n", str(n), "--folder", str(folder), "--work", str(work),
           "--poll-interval", str(args.poll_interval)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.time(), line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    samples: list[tuple[float, float, float]] = []  # (time, child RSS MiB, its children's RSS MiB)
    while proc.poll() is None:
        rss = status_kb(proc.pid, "VmRSS")
        if rss:
            samples.append((time.time(), rss / 1024, _children_rss_kb(proc.pid) / 1024))
        time.sleep(SAMPLE_S)
    reader.join(timeout=10)
    found = [line for _, line in lines if line.startswith(support.CHILD_MARK)]
    if proc.returncode or not found:
        print("\n".join(line for _, line in lines[-60:]), file=sys.stderr)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        raise SystemExit(f"memory bench child for N={n} failed (exit {proc.returncode})")
    res = json.loads(found[0][len(support.CHILD_MARK) :])
    if res["status"] != "Completed" or res["counts"]["processed"] + res["counts"]["failed"] != n:
        raise SystemExit(f"N={n}: dataset {res['status']} with counts {res['counts']}: {res['failure_reason']}")
    bounds = phase_bounds(res, lines)
    phases, start = [], res["t_start"]
    for name, end in bounds:
        inside = [s for s in samples if start <= s[0] <= end]
        phases.append({"phase": name, "seconds": end - start, "samples": len(inside),
                       "peak_rss_mb": max((s[1] for s in inside), default=None)})
        start = end
    during = [s for s in samples if res["t_start"] <= s[0] <= res["t_end"]]
    res.update(images_per_s=n / res["seconds"], phases=phases, sampled_peak_rss_mb=max(s[1] for s in during),
               server_peak_rss_mb=max((s[2] for s in during), default=0.0), rss_samples=len(during),
               growth_mb=res["peak_rss_mb"] - res["baseline_mb"])
    if args.keep:
        res["kept_work_dir"] = str(work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return res


def print_tables(runs: list[dict]) -> None:
    first = runs[0]
    head = ["N", "seconds", "images/s", "baseline MiB", "peak RSS MiB", "growth MiB", "peak ratio", "growth ratio",
            "server MiB"]
    rows = []
    for r in runs:
        rows.append([f"{r['n']:,}", f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}", f"{r['baseline_mb']:.0f}",
                     f"{r['peak_rss_mb']:.0f}", f"{r['growth_mb']:.0f}", f"{r['peak_rss_mb'] / first['peak_rss_mb']:.2f}",
                     f"{r['growth_mb'] / max(first['growth_mb'], 1):.2f}", f"{r['server_peak_rss_mb']:.0f}"])
    support.print_table(f"memory bench: tiny {W}x{H} JPEGs, local folder, Prefect flow, embedded service, "
                        f"{os.cpu_count()} cores (shard {first['shard_size']}, results page {first['results_page_size']})",
                        head, rows)
    for r in runs:
        support.print_table(f"N={r['n']:,}: peak RSS by phase (sampled every {SAMPLE_S} s; VmHWM "
                            f"{r['peak_rss_mb']:.0f} MiB)", ["phase", "seconds", "peak MiB"],
                            [[p["phase"], f"{p['seconds']:.1f}", "-" if p["peak_rss_mb"] is None else f"{p['peak_rss_mb']:.0f}"]
                             for p in r["phases"]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 4000], help="dataset sizes (full run: 10000 100000)")
    ap.add_argument("--poll-interval", type=float, default=2.0, help="CURATION_POLL_INTERVAL_S of the child")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    ap.add_argument("--keep", action="store_true", help="keep each child's data root")
    ap.add_argument("--components", action="store_true", help="only the steps after inference (see the docstring)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--component-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child or args.component_child:
        args.n = args.n[0]
        (child if args.child else component_child)(args)
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.n)
    if args.components:
        run_components(sizes)
        return
    tiny_images(sizes[-1], args.cache)
    runs = []
    for n in sizes:
        print(f"curating {n:,} tiny images in a fresh process ...", flush=True)
        runs.append(run_child(n, tiny_images(n, args.cache), args))
        r = runs[-1]
        print(f"  {r['seconds']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MiB (baseline {r['baseline_mb']:.0f})",
              flush=True)
    print_tables(runs)
    first = runs[0]
    summary = {"peak_ratio_to_smallest": {r["n"]: r["peak_rss_mb"] / first["peak_rss_mb"] for r in runs},
               "growth_ratio_to_smallest": {r["n"]: r["growth_mb"] / max(first["growth_mb"], 1) for r in runs},
               "target": "peak at 100k <= 1.5x peak at 10k"}
    support.write_result("memory", {"image_size": [W, H], **support.machine(), "runs": runs, **summary})


if __name__ == "__main__":
    main()
