"""Where a curation's CPU goes: a py-spy profile of one run over this process and all its children.

Usage:
    python bench/profile_pipeline.py               # the Prefect flow on 500 synthetic 1920x1080 JPEGs
    python bench/profile_pipeline.py --n 2000 --mode plain

Needs py-spy (pip install -e '.[bench]'); without it the script says so and exits 0. After an untimed warm-up
(Prefect's temporary server, a curation of 240 images, a 5,000-row layout), py-spy samples this process (the flow
or the plain calls, the embedded service) and every process below it (the service's workers, Prefect's server)
while one curation runs. Its on-CPU samples are sorted into steps by their stacks, and the steps into groups:
decoding, features, thumbnails, I/O, orchestration, results. Prints the shares by group, by step and by process;
writes bench/results/profile-<mode>-<N>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import support

Frame = tuple[str, str, int]  # (file, function, line)

_IDLE = {("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("threading.py", "join"),
         ("queue.py", "get"), ("selectors.py", "select"), ("thread.py", "_worker"), ("_base.py", "result"),
         ("_base.py", "wait"), ("base_events.py", "_run_once"), ("threading.py", "acquire")}
_HTTP = ("uvicorn/", "starlette/", "fastapi/", "anyio/", "h11/", "httpx/", "httpcore/")

# What the samples are grouped into: a group holds the steps whose names start with one of its prefixes.
GROUPS = {
    "decoding": ("decode:",),
    "features (quality signals, phash, model)": ("features:",),
    "thumbnail hash, resize, encode": ("thumbnail:",),
    "I/O (reads, fetch, HTTP, worker hand-over)": ("I/O:", "HTTP", "IPC:"),
    "orchestration (Prefect and its server, the tracker)": ("orchestration:",),
    "results, Parquet, analytics, sampling, records": ("results:", "parquet:", "analytics", "sampling", "records"),
}


def _is(path: str, suffix: str) -> bool:
    """Whether a frame's file is this module. py-spy shortens paths to their import root ('prefect/flows.py'), and
    sometimes to the bare file name ('jobs.py')."""
    return path == suffix or path.endswith("/" + suffix) or ("/" not in path and path == suffix.rsplit("/", 1)[-1])


def _in(path: str, folder: str) -> bool:
    return path.startswith(folder) or "/" + folder in path


def classify(stack: tuple[Frame, ...]) -> str:
    """The step one sample's stack (outermost frame first) belongs to: the most specific project step wins."""

    def has(suffix: str, func: str | None = None) -> bool:
        return any(_is(f, suffix) and (func is None or fn == func) for f, fn, _ in stack)

    def under(folder: str) -> bool:
        return any(_in(f, folder) for f, _, _ in stack)

    inner_file, inner_func, _ = stack[-1]
    if inner_func == "sleep" or (inner_file.rsplit("/", 1)[-1], inner_func) in _IDLE:
        return "idle"
    if has("inference/service/jobs.py", "predict_batch"):  # the service's batch, in a worker process or a thread
        if has("inference/imaging.py", "decode_image"):
            return "decode: service (once per image)"
        if has("analysis/quality.py", "image_signals"):
            return "features: quality signals + phash"
        if under("curation/inference/models/"):
            return "features: model predict"
        if has("inference/thumbnails.py", "decode_with_facts"):
            return "thumbnail: sha256 + resize + JPEG encode"
        if has("inference/service/jobs.py", "read"):
            return "I/O: worker reads the image file"
        return "service: batch bookkeeping"
    if has("inference/service/fetch.py") or has("inference/service/jobs.py", "_fetch"):
        return "I/O: service fetch (file://, http)"
    if under("curation/inference/models/"):
        return "features: model predict"
    if has("dataset/shard_store.py"):
        if under("httpx/") or has("inference/client.py"):
            return "results: client fetches result pages"
        return "results: store shards (thumbnail files, Parquet)"
    if has("inference/service/app.py", "job_results") or has("inference/result_pages.py"):
        return "results: service encodes result pages"
    if has("dataset/results.py") or has("dataset/finish.py") or has("dataset/parquet_io.py"):
        return "parquet: write the dataset's tables"
    if under("curation/analysis/"):
        return "analytics (kNN, duplicates, UMAP)"
    if under("curation/sampling/"):
        return "sampling"
    if has("dataset/registry.py") or has("dataset/catalog.py") or has("inference/shard_jobs.py"):
        return "records: registry, catalog, shard jobs"
    if under("multiprocessing/") or has("concurrent/futures/process.py"):  # a worker outside its batch, or its feeder
        return "IPC: worker hand-over (pickle, pipes)"
    if under("prefect/"):
        return "orchestration: prefect"
    if any(under(lib) for lib in _HTTP):
        return "HTTP (service and client plumbing)"
    if has("curation/tracking.py") or has("inference/shards.py"):
        return "orchestration: tracker"
    if has("inference/service/jobs.py"):
        return "service: batch bookkeeping"
    if under("curation/ingest/"):
        return "list/sign/validate"
    return "other"


def _frame(text: str) -> Frame | None:
    """py-spy's 'func (path/file.py:12)' as (path, func, line); None for its 'process 123:"cmd"' roots."""
    if text.startswith("process ") or not text.endswith(")") or " (" not in text:
        return None
    func, _, where = text[:-1].rpartition(" (")
    path, _, line = where.rpartition(":")
    return (path, func, int(line) if line.isdigit() else 0)


def shares(raw: Path) -> dict[str, object]:
    """Shares of the on-CPU samples in py-spy's raw output by step, by group and by process."""
    steps: Counter[str] = Counter()
    processes: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        stack = tuple(f for f in (_frame(x) for x in frames) if f is not None)
        if not stack:
            continue
        roots = [f for f in frames if f.startswith("process ")]
        cmd = roots[-1] if roots else ""
        process = ("service workers" if "forkserver" in cmd or "multiprocessing" in cmd else
                   "Prefect's server" if "prefect" in cmd and "server" in cmd else "this process")
        step = classify(stack)
        if step == "idle":
            continue
        if process == "Prefect's server":  # a uvicorn app over SQLite: all of it is orchestration
            step = "orchestration: Prefect's server"
        steps[step] += int(count)
        processes[process] += int(count)
    total = sum(steps.values()) or 1
    by_step = {k: v / total for k, v in steps.most_common()}
    groups = {g: sum(v for k, v in by_step.items() if k.startswith(prefixes)) for g, prefixes in GROUPS.items()}
    groups["other"] = 1.0 - sum(groups.values())
    return {"samples": sum(steps.values()), "by_group": groups, "by_step": by_step,
            "by_process": {k: v / total for k, v in processes.most_common()}}


def pyspy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="images of the profiled run (default 500)")
    ap.add_argument("--mode", choices=("prefect", "plain"), default="prefect", help="the flow or plain calls")
    ap.add_argument("--rate", type=int, default=50, help="py-spy samples per second (default 50)")
    ap.add_argument("--poll-interval", type=float, default=None, help="override CURATION_POLL_INTERVAL_S")
    ap.add_argument("--cache", type=Path, default=support.CACHE, help="where the synthetic images are kept")
    ap.add_argument("--tmp", type=Path, default=support.RESULTS, help="parent of the temporary data root")
    ap.add_argument("--raw", type=Path, default=None, help="also keep py-spy's raw samples in this file")
    args = ap.parse_args()
    spy = pyspy()
    if spy is None:
        print("profile_pipeline: py-spy is not installed (pip install -e '.[bench]'); skipping the profile.")
        return
    n = args.n
    args.tmp.mkdir(parents=True, exist_ok=True)
    paths = support.image_cache(max(n, support.WARMUP_IMAGES), args.cache)
    folder = support.dataset_folder(paths[:n], "main", args.cache)
    warm = support.dataset_folder(paths[: support.WARMUP_IMAGES], "warm", args.cache)
    work = Path(tempfile.mkdtemp(prefix="bench-profile-", dir=args.tmp))
    support.prepare_prefect(work / "prefect-home")
    curate = support.curate_prefect if args.mode == "prefect" else support.curate_plain
    try:
        from curation.inference.service.server import service_for
        from curation.ingest.storage import LocalStorageConfig

        with service_for(support.bench_settings(work / "data", args.poll_interval)) as settings:
            print("warm-up (untimed): Prefect's temporary server, the service's workers, imports and JIT ...", flush=True)
            support.warm_prefect()
            curate(settings, LocalStorageConfig(path=warm), "warm-up")
            support.warm_layout()
            support.read_into_page_cache(paths[:n])
            raw = work / "pyspy.txt"
            recorder = subprocess.Popen(
                [spy, "record", "--pid", str(os.getpid()), "--subprocesses", "--rate", str(args.rate),
                 "--nonblocking", "--format", "raw", "--output", str(raw)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
            time.sleep(1.0)  # py-spy attaches
            print(f"profiling {n} images ({args.mode}) ...", flush=True)
            t0 = time.perf_counter()
            dataset_id = curate(settings, LocalStorageConfig(path=folder), f"profile-{n}")
            wall = time.perf_counter() - t0
            recorder.send_signal(signal.SIGINT)
            _, err = recorder.communicate(timeout=120)
            support.check_done(settings, dataset_id, n)
            if not raw.exists():
                raise SystemExit(f"py-spy wrote no profile (exit {recorder.returncode}):\n{err.decode(errors='replace')[-2000:]}")
            if args.raw:
                shutil.copyfile(raw, args.raw)
            res = {"n": n, "mode": args.mode, "wall_s": wall, "rate_hz": args.rate, **support.machine(), **shares(raw)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    title = f"profile: {n} images {args.mode}, {wall:.1f} s wall, {res['samples']} on-CPU samples at {args.rate} Hz"
    support.print_table(title, ["group", "share"], [[k, f"{v:.1%}"] for k, v in res["by_group"].items()])
    support.print_table("by step", ["step", "share"], [[k, f"{v:.1%}"] for k, v in res["by_step"].items() if v >= 0.005])
    support.print_table("by process", ["process", "share"], [[k, f"{v:.1%}"] for k, v in res["by_process"].items()])
    support.write_result(f"profile-{args.mode}-{n}", res)


if __name__ == "__main__":
    main()
