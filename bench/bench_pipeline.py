"""End-to-end pipeline throughput against a decode floor, Prefect's share, peak memory, and a profile.

Usage:
    python bench/bench_pipeline.py                 # N=1000 (a few minutes on 2 cores)
    python bench/bench_pipeline.py --n 10000       # the full run (target: pipeline <= 2.0x the decode floor)
    python bench/bench_pipeline.py --azurite       # also the Prefect flow from Azurite (upload untimed; node_modules)
    python bench/bench_pipeline.py --n 10000 --azurite --repeat 1   # the issue's full run, one pair per mode
    python bench/bench_pipeline.py --profile-n 0   # skip the profile

Measured in ONE process (ratios are the point; the machine may be shared):
  1. floor     Pillow decodes each synthetic 1920x1080 JPEG once (draft mode, as curation.imaging does for a
               256-px short side) and encodes its 256-px thumbnail, in a process pool of os.cpu_count() workers.
  2. prefect   Curation(...).curate_dataset(..., wait=True) from a local folder, embedded service, default model,
               ephemeral Prefect (PREFECT_API_URL unset; a fresh PREFECT_HOME under bench/results). The temporary
               server's start-up is excluded by a trivial warm-up flow run first; imports and JIT (umap/numba) are
               excluded by an untimed warm-up curation of 240 images and a layout of 5,000 rows (UMAP's NN-descent).
  3. plain     the same curation as plain calls of the functions the tasks wrap (curation.pipeline and friends,
               thumbnail shards in a ThreadPoolExecutor like the flow's task runner, same poll interval).
  4. memory    peak RSS of this process during each run (VmHWM, reset through /proc/self/clear_refs before each run;
               ru_maxrss is reported too) plus its children: the Prefect temporary server and the worker processes
               of curation.workpool (decoding, signals, thumbnails and model features run there).
  5. azurite   (--azurite) the Prefect flow from Azurite started from node_modules, after an untimed upload.
Then a profile of the Prefect run at --profile-n images (default 500) in a fresh child process: py-spy over the
process and all its children when it is installed (pip install py-spy; shares of on-CPU samples per step and
grouped as decoding / features / I/O / orchestration), else a stack sampler over this process's threads and cProfile.
Writes bench/results/pipeline-<N>-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import linecache
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO))

W, H = 1920, 1080
THUMB = 256
WARMUP_IMAGES = 240  # > 200, so the warm-up takes the UMAP path of curation.layout too (numba JIT)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic images
# ----------------------------------------------------------------------------------------------------------------

_NOISE = None


def _make_jpeg(args: tuple[int, str]) -> int:
    """One synthetic road-ish 1920x1080 JPEG (gradient sky + smooth blobs + blocks + fine noise), quality 85."""
    global _NOISE
    import numpy as np
    from PIL import Image, ImageChops

    seed, path = args
    if _NOISE is None:  # one fine-noise bank per worker; each image crops it at a random offset
        _NOISE = Image.fromarray(np.random.default_rng(12345).integers(0, 17, (H + 64, W + 64, 3), dtype=np.uint8))
    rng = np.random.default_rng(seed)
    grad = Image.fromarray(rng.integers(0, 256, (2, 1, 3), dtype=np.uint8)).resize((W, H), Image.BILINEAR)
    blobs = Image.fromarray(rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)).resize((W, H), Image.BICUBIC)
    shape = (int(rng.integers(20, 90)), int(rng.integers(40, 160)), 3)
    blocks = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).resize((W, H), Image.NEAREST)
    img = Image.blend(Image.blend(grad, blobs, 0.5), blocks, float(rng.uniform(0.1, 0.3)))
    ox, oy = (int(v) for v in rng.integers(0, 64, 2))
    img = ImageChops.add(img, _NOISE.crop((ox, oy, ox + W, oy + H)), scale=1.0, offset=-8)
    tmp = path + ".tmp"
    img.save(tmp, "JPEG", quality=85)
    os.replace(tmp, path)
    return os.path.getsize(path)


def image_cache(n: int, cache: Path) -> list[Path]:
    """The first n cached images, generated (in parallel) the first time."""
    src = cache / "jpeg-1920x1080"
    src.mkdir(parents=True, exist_ok=True)
    paths = [src / f"img_{i:05d}.jpg" for i in range(n)]
    missing = [(i, str(p)) for i, p in enumerate(paths) if not p.exists()]
    if missing:
        t0 = time.perf_counter()
        print(f"generating {len(missing)} synthetic 1920x1080 JPEGs into {src} (once) ...", flush=True)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_make_jpeg, missing, chunksize=16))
        print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    return paths


def dataset_folder(paths: list[Path], cache: Path, tag: str) -> Path:
    """A folder holding exactly these images (hard links into the cache; copies if links are impossible)."""
    folder = cache / f"view-{tag}-{len(paths)}"
    if folder.is_dir() and len(list(folder.iterdir())) == len(paths):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for p in paths:
        try:
            os.link(p, folder / p.name)
        except OSError:
            shutil.copyfile(p, folder / p.name)
    return folder


# ----------------------------------------------------------------------------------------------------------------
# 1. Decode floor
# ----------------------------------------------------------------------------------------------------------------


def _floor_one(path: str) -> int:
    """Read, decode once (draft mode to >= 256 px short side, as curation.imaging), 256-px thumbnail, encode."""
    from PIL import Image

    with open(path, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as img:
        scale = max(1, min(img.size) // THUMB)
        img.draft("RGB", (img.size[0] // scale, img.size[1] // scale))
        img.load()
        rgb = img.convert("RGB")
    rgb.thumbnail((THUMB, THUMB))
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=85)
    return out.tell()


def _pillow_default_one(path: str) -> int:
    """The textbook Pillow thumbnail, for context only: Image.thumbnail's own draft (reducing_gap=2: a 1/2-scale
    decode for a 256-px thumbnail of a 1080p image), then encode. Not the floor: ours decodes at 1/4."""
    from PIL import Image

    with Image.open(path) as img:
        img.thumbnail((THUMB, THUMB))
        out = io.BytesIO()
        img.convert("RGB").save(out, format="JPEG", quality=85)
    return out.tell()


def _noop(x: int) -> int:
    return x


def decode_floor(paths: list[Path]) -> dict[str, float]:
    workers = os.cpu_count() or 1
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_noop, range(workers * 4)))  # workers started and imported before the clock
        pool.submit(_floor_one, str(paths[0])).result()
        t0 = time.perf_counter()
        list(pool.map(_floor_one, [str(p) for p in paths], chunksize=8))
        wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers have exited: their CPU is counted
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return {"seconds": wall, "images_per_s": len(paths) / wall, "workers": workers, "cpu_s": cpu}


def step_costs(paths: list[Path]) -> dict[str, float]:
    """Per-image CPU cost (ms, one thread, this process) of each step the pipeline does per image, vs the floor's."""
    import hashlib

    import tempfile

    from curation.imaging import at_min_side, decode_image
    from curation.models.registry import load_backend
    from curation.quality import image_signals, working_copy
    from curation.service.jobs import MODEL_SIDE
    from curation.settings import Settings
    from curation.thumbnails import write_thumbnail

    scratch = Path(tempfile.mkdtemp(prefix="bench-steps-"))

    backend = load_backend(Settings().model, Settings())
    side = getattr(backend, "input_side", MODEL_SIDE)  # as the service decodes: draft mode to the model's input side
    datas = [p.read_bytes() for p in paths]
    costs: dict[str, float] = {}

    def timed(step: str, fn):  # noqa: ANN001, ANN202
        t = time.thread_time()
        out = fn()
        costs[step] = costs.get(step, 0.0) + time.thread_time() - t
        return out

    for path, data in zip(paths, datas):
        timed("floor: decode+thumbnail+encode", lambda: _floor_one(str(path)))
        timed("(context) Pillow default Image.thumbnail", lambda: _pillow_default_one(str(path)))
        timed("service: read + sha256", lambda: hashlib.sha256(path.read_bytes()).hexdigest())
        dec = timed("service: decode (draft, once)", lambda: decode_image(data, min_side=THUMB))
        thumb = timed("service: thumbnail resize", lambda: working_copy(dec.image))
        timed("service: image_signals (thumbnail; blur on the decode)",
              lambda: image_signals(thumb, dec.width, dec.height, detail=dec.image))

        def encode() -> bytes:
            out = io.BytesIO()
            thumb.save(out, format="JPEG", quality=85)
            return out.getvalue()

        jpeg = timed("service: thumbnail JPEG encode", encode)
        img = timed("service: reduce to the model's side", lambda: at_min_side(dec, side))
        timed("service: model predict", lambda: backend.predict([img]))
        timed("pipeline: write thumbnail file", lambda: write_thumbnail(scratch / "t.jpg", jpeg))
    return {k: 1000 * v / len(paths) for k, v in costs.items()}


# ----------------------------------------------------------------------------------------------------------------
# Process memory / CPU helpers (Linux /proc)
# ----------------------------------------------------------------------------------------------------------------


def _status_kb(pid: int | str, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak(pid: int | str = "self") -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Meter:
    """Wall, CPU (this process and its live children) and peak RSS of one measured block."""

    def __enter__(self) -> Meter:
        self.kids = _descendants(os.getpid())
        for k in self.kids:
            _reset_peak(k)
        self.reset = _reset_peak()
        self.kid_cpu0 = {k: _cpu_s(k) for k in self.kids}
        self.load0 = os.getloadavg()[0]
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        self.kid_cpu = sum(_cpu_s(k) - c for k, c in self.kid_cpu0.items())
        self.hwm_mb = (_status_kb("self", "VmHWM") or 0) / 1024
        self.rss_mb = (_status_kb("self", "VmRSS") or 0) / 1024
        self.ru_maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.ru_children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        self.kid_hwm_mb = sum((_status_kb(k, "VmHWM") or 0) for k in self.kids) / 1024
        self.load1 = os.getloadavg()[0]

    def as_dict(self) -> dict[str, float]:
        ncpu = os.cpu_count() or 1
        return {
            "seconds": self.wall,
            "cpu_s": self.cpu,
            "cpu_utilisation": self.cpu / (self.wall * ncpu),
            "children_cpu_s": self.kid_cpu,
            "peak_rss_mb": self.hwm_mb if self.reset else self.ru_maxrss_mb,
            "peak_rss_reset": self.reset,
            "ru_maxrss_self_mb": self.ru_maxrss_mb,
            "ru_maxrss_children_mb": self.ru_children_mb,
            "children_peak_rss_mb": self.kid_hwm_mb,
            "rss_after_mb": self.rss_mb,
            "loadavg_before": self.load0,
            "loadavg_after": self.load1,
        }


# ----------------------------------------------------------------------------------------------------------------
# 2./3. The pipeline, through Prefect and as plain calls
# ----------------------------------------------------------------------------------------------------------------


def prepare_environment(prefect_home: Path) -> None:
    """Ephemeral Prefect in a private home, before prefect is imported anywhere."""
    for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(key, None)
    os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    # A fresh home migrates its database at the first start; on a loaded 2-core machine that exceeds the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry heartbeats into the SQLite db


def warm_prefect() -> float:
    from prefect import flow

    @flow(name="bench-warmup")
    def bench_warmup() -> int:
        return 1

    t0 = time.perf_counter()
    bench_warmup()
    return time.perf_counter() - t0


def warm_layout() -> float:
    """Load (or JIT) the 3D layout's UMAP code for 5,000 rows before the clock: a fresh process's first layout reads
    numba's on-disk cache, ~2 s that would otherwise land in the first timed run."""
    import numpy as np

    from curation.layout import layout_3d

    t0 = time.perf_counter()
    layout_3d(np.random.default_rng(0).normal(size=(5000, 64)).astype(np.float32))
    return time.perf_counter() - t0


def run_prefect(settings, config, name: str) -> str:  # noqa: ANN001
    from curation import Curation

    return Curation(settings=settings).curate_dataset(name, config, wait=True)


def _plain_one_decode(pipeline, settings, config, dataset_id: str, parts, mark) -> int:  # noqa: ANN001
    """Submit every shard, then poll and store each shard's results (in a thread pool) as its job completes."""
    for i, shard in enumerate(parts):
        pipeline.submit_shard(config, settings, dataset_id, i, shard)
    mark("sign+submit")
    polls, storing = 0, {}
    with ThreadPoolExecutor(max_workers=settings.thumbnail_workers) as pool:
        while True:
            status = pipeline.check_job(dataset_id, settings)
            polls += 1
            if status.lost:
                raise RuntimeError(f"shards lost: {status.reasons}")
            for shard, job_id in pipeline.shards_to_store(dataset_id, settings):
                if (shard, job_id) not in storing:
                    storing[shard, job_id] = pool.submit(pipeline.store_shard_results, config, settings, dataset_id, shard)
            if status.status == "Completed":
                break
            if hasattr(pipeline, "wait_for_a_shard"):
                pipeline.wait_for_a_shard(dataset_id, settings, settings.poll_interval_s)
            else:
                time.sleep(settings.poll_interval_s)
        mark("poll saw job finished")
        for future in storing.values():
            future.result()
    mark("shards stored")
    return polls


def run_plain(settings, config, name: str, marks: dict[str, float] | None = None) -> str:  # noqa: ANN001
    """The curate-dataset and track-curation flows as plain calls of the functions their tasks wrap.

    marks, when given, receives the offset (s) at which each step ended, and when the service finished the job.
    """
    from curation import dataset_analytics, pipeline, subsets
    from curation.client import connect
    from curation.registry import DatasetType
    from curation.settings import use_settings

    t0, t0_wall = time.perf_counter(), time.time()
    marks = marks if marks is not None else {}

    def mark(step: str) -> None:
        marks[step] = time.perf_counter() - t0

    with use_settings(settings):
        report = pipeline.list_and_validate(config, settings)
        mark("list+validate")
        with connect(settings) as client:
            client.check_access()
        mark("check service")
        record = pipeline.register_dataset(name, config, report, settings, DatasetType.USER)
        mark("register")
        parts = pipeline.shards(report.accepted, settings.shard_size)
        per_shard = hasattr(pipeline, "submit_shard")  # one inference job per shard (else one job per dataset)
        if hasattr(pipeline, "store_shard_results"):  # one decode: the service makes thumbnails, shards stored as done
            marks["polls"] = _plain_one_decode(pipeline, settings, config, record.id, parts, mark)
            written = pipeline.write_dataset_results(record.id, settings, config)
        else:  # earlier designs, for comparing revisions with --ref
            with ThreadPoolExecutor(max_workers=settings.thumbnail_workers) as pool:
                futures = [
                    pool.submit(pipeline.make_thumbnail_shard, config, settings, record.id, i, shard)
                    for i, shard in enumerate(parts)
                ]
                if per_shard:
                    for i, shard in enumerate(parts):
                        pipeline.submit_shard(config, settings, record.id, i, shard)
                    mark("sign+submit")
                else:
                    items = pipeline.sign_items(config, settings, report.accepted)
                    mark("sign")
                    with connect(settings) as client:
                        pipeline.submit_images(client, record.id, items, settings)
                    mark("submit")
                for f in futures:
                    f.result()
                mark("thumbnails done")
            polls = 0
            while True:
                if per_shard:
                    status = pipeline.check_job(record.id, settings)
                    if status.lost:
                        raise RuntimeError(f"shards lost: {status.reasons}")
                else:
                    with connect(settings) as client:
                        status = pipeline.check_job(client, record.id, settings)
                polls += 1
                if status.finished:
                    break
                time.sleep(settings.poll_interval_s)
            mark("poll saw job finished")
            marks["polls"] = polls
            if status.status != "Completed":
                raise RuntimeError(f"jobs ended {status.status}: {getattr(status, 'reason', None)}")
            if per_shard:
                written = pipeline.write_dataset_results(record.id, settings)
            else:
                with connect(settings) as client:
                    updated = client._request("GET", f"/v1/jobs/{status.job_id}")["updated"]  # when the service finished
                    marks["service finished job"] = datetime.fromisoformat(updated).timestamp() - t0_wall
                    written = pipeline.write_dataset_results(client, record.id, settings)
        mark("results written")
        if written.failed < written.images:
            dataset_analytics.analyse_dataset(settings.data_root, record.id)
            mark("analytics")
            subsets.sample_dataset(settings.data_root, record.id)
            mark("sampling")
        pipeline.complete_dataset(record.id, settings)
        mark("complete")
    return record.id


def check_done(settings, dataset_id: str, n: int) -> dict[str, object]:  # noqa: ANN001
    from curation import registry

    record = registry.load(settings.data_root, dataset_id)
    c = record.counts
    if record.status.value != "Completed" or c.accepted != n or c.processed != n:
        raise RuntimeError(f"dataset {dataset_id}: {record.status.value}, counts {c}, reason {record.failure_reason}")
    return {"status": record.status.value, "processed": c.processed, "failed": c.failed}


def make_settings(data_root: Path, args: argparse.Namespace):  # noqa: ANN201
    from curation.settings import Settings

    update: dict[str, object] = {"data_root": data_root}
    if args.poll_interval is not None:
        update["poll_interval_s"] = args.poll_interval
    return Settings().model_copy(update=update)


# ----------------------------------------------------------------------------------------------------------------
# Profiling: a wall-clock sampler over all threads, and cProfile in every thread
# ----------------------------------------------------------------------------------------------------------------

_IDLE_FUNCS = {
    ("threading.py", "wait"), ("threading.py", "_wait_for_tstate_lock"), ("threading.py", "join"),
    ("queue.py", "get"), ("selectors.py", "select"), ("thread.py", "_worker"), ("_base.py", "result"),
    ("_base.py", "wait"), ("base_events.py", "_run_once"), ("threading.py", "acquire"),
}


@functools.lru_cache(maxsize=100_000)
def _classify(stack: tuple[tuple[str, str, int], ...]) -> str:
    """Category of one thread's stack (outermost first): the most specific project step wins."""
    files = [f for f, _, _ in stack]
    funcs = {(os.path.basename(f), fn) for f, fn, _ in stack}
    joined = "\n".join(f"{f}:{fn}" for f, fn, _ in stack)

    def has(name: str, func: str | None = None) -> bool:
        return any(b == name and (func is None or fn == func) for b, fn in funcs)

    inner_file, inner_func, inner_line = stack[-1]
    text = linecache.getline(inner_file, inner_line).strip()
    if "sleep(" in text:
        return "waiting: poll sleep" if ("track_curation" in joined or "run_plain" in joined) else "waiting: other sleep"
    if (os.path.basename(inner_file), inner_func) in _IDLE_FUNCS:
        return "idle (blocked on lock/queue/select)"
    if has("jobs.py", "predict_batch"):  # the service's batch, in a worker process or in its thread
        if has("imaging.py", "decode_image"):
            return "decode: service (2nd decode)" if not has("thumbnails.py", "decode_with_facts") else "decode: service (once)"
        if has("quality.py", "image_signals"):
            return "features: quality signals + phash"
        if has("thumbnails.py", "decode_with_facts"):
            return "thumbnail: sha256 + resize + JPEG encode"
        if "curation/models/" in joined:
            return "features: model predict"
        return "service: batch bookkeeping"
    if has("jobs.py", "_fetch") or has("fetch.py", "fetch_bytes"):
        return "I/O: service fetch (file://, http)"
    if has("jobs.py", "_load"):
        if has("imaging.py", "decode_image"):
            return "decode: service (2nd decode)"
        return "I/O: service fetch (file://, http)"
    if "curation/models/" in joined:
        return "features: model predict"
    if has("thumbnails.py", "make_thumbnail"):
        if has("imaging.py", "decode_image"):
            return "decode: thumbnail (1st decode)"
        if has("quality.py", "image_signals"):
            return "thumbnail: quality signals + phash"
        if "sha256" in text:
            return "thumbnail: sha256 content hash"
        return "thumbnail: resize + JPEG encode + write"
    if has("thumbnails.py", "thumbnail_rows"):
        return "I/O: thumbnail read_bytes" if has("storage.py", "read_bytes") or "read_bytes" in text else "thumbnail: other"
    if has("shard_results.py"):
        return "results: store shard (thumbnail files, Parquet)" if not ("httpx" in joined or "client.py" in joined) else "results: client fetch (Arrow)"
    if has("app.py", "job_results") or ("jobs.py", "as_json") in funcs:
        return "results: service JSON encode"
    if has("results.py") and ("httpx" in joined or "client.py" in joined):
        return "results: client fetch + JSON decode"
    if has("results.py") or has("parquet_io.py") or has("pipeline.py", "make_thumbnail_shard"):
        return "parquet: write results/shards"
    if has("dataset_analytics.py") or has("analytics.py") or has("layout.py"):
        return "analytics (kNN, dups, UMAP)"
    if has("subsets.py") or has("sampling.py"):
        return "sampling"
    if has("registry.py"):
        return "registry JSON"
    if any("/multiprocessing/" in f or f.endswith("concurrent/futures/process.py") for f in files):
        return "IPC: worker hand-over (pickle, pipes)"
    if any("/prefect/" in f for f in files):
        return "orchestration: prefect"
    if any(s in joined for s in ("/uvicorn/", "/starlette/", "/fastapi/", "/anyio/", "/h11/", "/httpx/", "/httpcore/")):
        return "HTTP (service/client plumbing)"
    if has("jobs.py"):
        return "service: batch bookkeeping"
    if has("storage.py") or has("validation.py") or has("pipeline.py"):
        return "list/sign/validate"
    return "other"


class StackSampler(threading.Thread):
    """Every `interval` s, classify the current stack of every other thread (needs the GIL: a biased but cheap view)."""

    def __init__(self, interval: float = 0.01) -> None:
        super().__init__(daemon=True, name="bench-sampler")
        self.interval = interval
        self.stop_event = threading.Event()
        self.busy: Counter[str] = Counter()
        self.main: Counter[str] = Counter()
        self.ticks = 0
        self.busy_threads: list[int] = []

    def run(self) -> None:
        sys.setprofile(None)  # the sampler's own work stays out of cProfile
        me, main_id = threading.get_ident(), threading.main_thread().ident
        while not self.stop_event.wait(self.interval):
            self.ticks += 1
            busy = 0
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                stack = []
                while frame is not None:
                    stack.append((frame.f_code.co_filename, frame.f_code.co_name, frame.f_lineno))
                    frame = frame.f_back
                stack.reverse()
                category = _classify(tuple(stack))
                if tid == main_id:
                    self.main[category] += 1
                if not category.startswith(("idle", "waiting")):
                    self.busy[category] += 1
                    busy += 1
            self.busy_threads.append(busy)

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


class AllThreadsProfile:
    """cProfile in the main thread and in every thread started later; stats diffed between two snapshots."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _hook(self, *_: object) -> None:
        prof = cProfile.Profile()
        with self._lock:
            self.profiles.append(prof)
        prof.enable()  # replaces this hook for the thread

    def install(self) -> None:
        threading.setprofile(self._hook)
        self._hook()

    def snapshot(self) -> dict:
        merged: dict = {}
        with self._lock:
            profiles = list(self.profiles)
        for prof in profiles:
            prof.snapshot_stats()  # no disable(): that would only switch off the calling thread
            for func, (cc, nc, tt, ct, _callers) in prof.stats.items():
                m = merged.get(func, (0, 0, 0.0, 0.0))
                merged[func] = (m[0] + cc, m[1] + nc, m[2] + tt, m[3] + ct)
        return merged


def _stat_diff(after: dict, before: dict) -> dict:
    out = {}
    for func, (cc, nc, tt, ct) in after.items():
        b = before.get(func, (0, 0, 0.0, 0.0))
        if nc - b[1] > 0:
            out[func] = (cc - b[0], nc - b[1], tt - b[2], ct - b[3])
    return out


_CPROFILE_KEYS = {
    "decode_image (both decodes)": ("imaging.py", "decode_image"),
    "JobRunner._load (service fetch+decode)": ("jobs.py", "_load"),
    "CpuModel.predict (features)": ("cpu.py", "predict"),
    "decode_with_facts (decode+signals+encode)": ("thumbnails.py", "decode_with_facts"),
    "store_shard (thumbnail files, Parquet)": ("shard_results.py", "store_shard"),
    "image_signals (quality+phash)": ("quality.py", "image_signals"),
    "fetch_bytes (service I/O)": ("fetch.py", "fetch_bytes"),
    "write_results (results Parquet)": ("results.py", "write_results"),
    "ImageResult.as_json (service)": ("jobs.py", "as_json"),
    "analyse_dataset": ("dataset_analytics.py", "analyse_dataset"),
    "subsets.sample_dataset": ("subsets.py", "sample_dataset"),
    "track_curation sleep (time.sleep)": ("~", "<built-in method time.sleep>"),
}


def _pyspy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


def _pyspy_frame(frame: str) -> tuple[str, str, int] | None:
    """'func (path/file.py:12)' -> (path, func, line); None for py-spy's 'process 123:"cmd"' roots."""
    if frame.startswith("process ") or not frame.endswith(")") or " (" not in frame:
        return None
    func, _, where = frame[:-1].rpartition(" (")
    path, _, line = where.rpartition(":")
    if not path.startswith(("/", "<")):  # py-spy shortens paths to their import root: 'prefect/flows.py'
        path = "/" + path
    return (path, func, int(line) if line.isdigit() else 0)


def pyspy_shares(raw: Path) -> dict[str, object]:
    """Share of on-CPU samples per category (bench._classify), over every process py-spy followed."""
    busy: Counter[str] = Counter()
    per_process: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack_text.split(";")
        roots = [f for f in frames if f.startswith("process ")]
        stack = tuple(f for f in (_pyspy_frame(x) for x in frames) if f is not None)
        if not stack:
            continue
        category = _classify(stack)
        if category.startswith(("idle", "waiting")):
            continue
        busy[category] += int(count)
        cmd = roots[-1] if roots else "?"
        kind = ("worker" if "forkserver" in cmd or "multiprocessing" in cmd else
                "prefect server" if "prefect.server" in cmd else "main")
        per_process[kind] += int(count)
    total = sum(busy.values()) or 1
    shares = {k: v / total for k, v in busy.most_common()}
    groups = {group: sum(v for k, v in shares.items() if k.startswith(prefixes)) for group, prefixes in _GROUPS.items()}
    groups["other"] = 1.0 - sum(groups.values())
    return {"samples": total, "busy_share": shares, "groups": groups,
            "process_share": {k: v / total for k, v in per_process.most_common()}}


# What the issue asks the profile to split the time into.
_GROUPS = {
    "decoding": ("decode:",),
    "features (quality signals, phash, model)": ("thumbnail: quality", "features:"),
    "thumbnail resize + encode + write": ("thumbnail: resize", "thumbnail: sha256"),
    "I/O (reads, fetch, HTTP, worker hand-over)": ("I/O:", "HTTP", "IPC:"),
    "orchestration (Prefect, incl. its server)": ("orchestration:",),
    "results, Parquet, analytics, sampling": ("results:", "parquet:", "analytics", "sampling", "registry"),
}


def profile_child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: warm up, then profile one Prefect curation; prints the profile as JSON.

    With py-spy (pip install py-spy), a sampling profile of this process and all its children (the worker
    processes, Prefect's temporary server) over the timed run; else an in-process stack sampler and cProfile,
    which cannot see the worker processes.
    """
    spy = _pyspy()
    prof = None if spy else AllThreadsProfile()
    if prof:
        prof.install()
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-prof-", dir=args.tmp))
    prepare_environment(work / "prefect-home")
    from curation.storage import LocalStorageConfig

    settings = make_settings(work / "data", args)
    paths = image_cache(max(args.n, WARMUP_IMAGES), args.cache)
    folder = dataset_folder(paths[: args.n], args.cache, "main")
    warm = dataset_folder(paths[:WARMUP_IMAGES], args.cache, "warm")
    warm_prefect()
    run_plain(settings, LocalStorageConfig(path=warm), "warm-up")
    warm_layout()
    if spy:
        raw = work / "pyspy.txt"
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(os.getpid()), "--subprocesses", "--rate", "50", "--nonblocking",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(1.0)  # py-spy attaches
        t0 = time.perf_counter()
        dataset_id = run_prefect(settings, LocalStorageConfig(path=folder), f"profile-{args.n}")
        wall = time.perf_counter() - t0
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=120)
        check_done(settings, dataset_id, args.n)
        out: dict[str, object] = {"n": args.n, "wall_s": wall, "profiler": "py-spy (rate 50 Hz, all processes)"}
        if raw.exists():
            out["pyspy"] = pyspy_shares(raw)
        else:
            out["pyspy_error"] = err.decode(errors="replace")[-2000:]
        shutil.rmtree(work, ignore_errors=True)
        print("PROFILE-JSON " + json.dumps(out))
        return
    before = prof.snapshot()
    sampler = StackSampler()
    sampler.start()
    t0 = time.perf_counter()
    dataset_id = run_prefect(settings, LocalStorageConfig(path=folder), f"profile-{args.n}")
    wall = time.perf_counter() - t0
    sampler.stop()
    after = prof.snapshot()
    check_done(settings, dataset_id, args.n)
    diff = _stat_diff(after, before)
    top = sorted(diff.items(), key=lambda kv: kv[1][2], reverse=True)[:30]
    keys = {}
    for label, (fname, func) in _CPROFILE_KEYS.items():
        hits = [v for k, v in diff.items() if Path(k[0]).name == fname and k[2] == func or (fname == "~" and k[2] == func)]
        keys[label] = {"calls": sum(h[1] for h in hits), "cumtime_s": sum(h[3] for h in hits)}
    busy_total = sum(sampler.busy.values()) or 1
    main_total = sum(sampler.main.values()) or 1
    out = {
        "n": args.n,
        "wall_s": wall,
        "sampler": {
            "interval_s": sampler.interval,
            "ticks": sampler.ticks,
            "mean_busy_threads": sum(sampler.busy_threads) / max(1, len(sampler.busy_threads)),
            "busy_share": {k: v / busy_total for k, v in sampler.busy.most_common()},
            "main_thread_share": {k: v / main_total for k, v in sampler.main.most_common()},
        },
        "cprofile_key_functions": keys,
        "cprofile_top_tottime": [
            {"function": f"{Path(k[0]).name}:{k[1]}:{k[2]}", "calls": v[1], "tottime_s": v[2], "cumtime_s": v[3]}
            for k, v in top
        ],
    }
    shutil.rmtree(work, ignore_errors=True)
    print("PROFILE-JSON " + json.dumps(out))


# ----------------------------------------------------------------------------------------------------------------
# Azurite (optional)
# ----------------------------------------------------------------------------------------------------------------


def run_azure(args: argparse.Namespace, paths: list[Path], settings, work: Path) -> dict[str, object]:  # noqa: ANN001
    from tests.azurite import AZURITE_BLOB_BIN, run_azurite

    if not AZURITE_BLOB_BIN.exists():
        return {"skipped": f"{AZURITE_BLOB_BIN} missing (run `make test` to npm ci)"}
    from azure.storage.blob import BlobServiceClient
    from pydantic import SecretStr

    from curation.storage import AzureStorageConfig

    out: dict[str, object] = {}
    with run_azurite(work / "azurite") as az:
        service = BlobServiceClient.from_connection_string(az.connection_string)
        container = service.create_container("bench")
        t0 = time.perf_counter()

        def upload(p: Path) -> None:
            container.upload_blob(p.name, p.read_bytes(), overwrite=True)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(upload, paths))
        out["upload_s"] = time.perf_counter() - t0
        print(f"      uploaded in {out['upload_s']:.0f} s (untimed)", flush=True)
        config = AzureStorageConfig(
            account_name=az.account_name, container_name="bench", account_key=SecretStr(az.account_key),
            account_url=az.blob_endpoint,
        )
        runners = [("prefect", run_prefect)] + ([("plain", run_plain)] if args.azurite_plain else [])
        for label, runner in runners:
            with Meter() as m:
                dataset_id = runner(settings, config, f"azurite-{label}-{len(paths)}")
            check_done(settings, dataset_id, len(paths))
            out[label] = {**m.as_dict(), "images_per_s": len(paths) / m.wall}
            print(f"      azurite {label}: {m.wall:.1f} s, {len(paths) / m.wall:.1f} img/s", flush=True)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------


def _fmt_row(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths)))


def _checkpoint(res: dict, **partial: object) -> None:
    """The measurements so far, in case a long run on a busy machine is stopped before its table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"pipeline-{res['n']}-partial.json").write_text(json.dumps({**res, **partial}, indent=2, default=str))


def print_table(res: dict) -> None:
    n, floor = res["n"], res["floor"]["seconds"]
    rows = [["run", "seconds", "img/s", "x floor", "CPU s", "x floor CPU", "cpu util", "peak RSS MB", "server CPU s"]]
    fcpu = res["floor"]["cpu_s"]
    rows.append(["decode floor (pool)", f"{floor:.1f}", f"{res['floor']['images_per_s']:.0f}", "1.00", f"{fcpu:.1f}",
                 "1.00", "-", "-", "-"])
    for key in ("prefect", "plain"):
        r = res[key]
        rows.append([
            f"pipeline {key}", f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}", f"{r['seconds'] / floor:.2f}",
            f"{r['cpu_s'] + r['children_cpu_s']:.1f}", f"{(r['cpu_s'] + r['children_cpu_s']) / fcpu:.2f}",
            f"{r['cpu_utilisation']:.0%}", f"{r['peak_rss_mb']:.0f}", f"{r['children_cpu_s']:.1f}",
        ])
    for key, r in res.get("azurite", {}).items():
        if isinstance(r, dict):
            rows.append([
                f"azurite {key}", f"{r['seconds']:.1f}", f"{r['images_per_s']:.0f}", f"{r['seconds'] / floor:.2f}",
                f"{r['cpu_s'] + r['children_cpu_s']:.1f}", f"{(r['cpu_s'] + r['children_cpu_s']) / fcpu:.2f}",
                f"{r['cpu_utilisation']:.0%}", f"{r['peak_rss_mb']:.0f}", f"{r['children_cpu_s']:.1f}",
            ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n== pipeline bench, N={n} synthetic 1920x1080 JPEGs, {os.cpu_count()} cores, "
          f"poll interval {res['poll_interval_s']} s")
    for r in rows:
        print(_fmt_row(r, widths))
    print(f"floor runs: {', '.join(f'{s:.1f}s' for s in res['floor']['runs_s'])} (mean used); "
          + "; ".join(f"{k} runs: " + ", ".join(f"{r['seconds']:.1f}s" for r in res[k]["runs"]) for k in ("prefect", "plain")))
    print(f"Prefect adds {res['prefect_overhead_pct']:+.1f}% wall over plain calls "
          f"({res['prefect']['seconds'] - res['plain']['seconds']:+.1f} s) and {res['prefect_cpu_overhead_pct']:+.1f}% CPU "
          f"(this process + Prefect's temporary server); target pipeline <= 2.0x floor "
          f"({'met' if res['prefect']['seconds'] / floor <= 2.0 else 'NOT met'} at N={n})")
    print(f"cold-start (untimed warm-up): prefect temp server {res['warmup']['prefect_server_s']:.1f} s, "
          f"plain curation of {WARMUP_IMAGES} images {res['warmup']['plain_240_s']:.1f} s (imports, JIT)")
    print("per-image CPU cost, one thread (ms):  " + ", ".join(f"{k} {v:.1f}" for k, v in res["step_costs_ms"].items()))
    pipe_ms = sum(v for k, v in res["step_costs_ms"].items() if not k.startswith(("floor", "(context)")))
    print(f"  pipeline steps sum {pipe_ms:.1f} ms vs floor {res['step_costs_ms']['floor: decode+thumbnail+encode']:.1f} ms "
          f"= {pipe_ms / res['step_costs_ms']['floor: decode+thumbnail+encode']:.2f}x CPU before any orchestration")
    print("plain run timeline (s from start): " + ", ".join(
        f"{k} {v:.1f}" if k != "polls" else f"polls {v}" for k, v in res["plain"]["timeline_s"].items()))
    if "profile" in res and "pyspy" in res["profile"]:
        p = res["profile"]
        spy = p["pyspy"]
        print(f"\n== profile: Prefect run at N={p['n']}, {p['wall_s']:.1f} s wall, {p['profiler']}, "
              f"{spy['samples']} on-CPU samples")
        print("share of on-CPU samples by what the issue asks:")
        for k, v in spy["groups"].items():
            print(f"  {k:45s} {v:6.1%}")
        print("by step:")
        for k, v in spy["busy_share"].items():
            if v >= 0.005:
                print(f"  {k:45s} {v:6.1%}")
        print("by process: " + ", ".join(f"{k} {v:.1%}" for k, v in spy["process_share"].items()))
    elif "profile" in res:
        p = res["profile"]
        print(f"\n== profile: Prefect run at N={p['n']}, {p['wall_s']:.1f} s wall, "
              f"mean busy threads {p['sampler']['mean_busy_threads']:.2f} on {os.cpu_count()} cores")
        print("share of busy thread time (wall-clock sampler, all threads):")
        for k, v in p["sampler"]["busy_share"].items():
            if v >= 0.005:
                print(f"  {k:45s} {v:6.1%}")
        print("main thread (what the flow waits on):")
        for k, v in p["sampler"]["main_thread_share"].items():
            if v >= 0.005:
                print(f"  {k:45s} {v:6.1%}")
        print("cProfile cumulative time (summed over threads; inflated by cProfile's own overhead):")
        for k, v in p["cprofile_key_functions"].items():
            print(f"  {k:45s} {v['cumtime_s']:7.2f} s  {v['calls']:6d} calls")
        print("cProfile top tottime:")
        for row in p["cprofile_top_tottime"][:15]:
            print(f"  {row['function'][:70]:70s} {row['tottime_s']:7.2f} s {row['calls']:8d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="images (default 1000; 10000 for the full run)")
    ap.add_argument("--azurite", action="store_true", help="also curate from Azurite (needs node_modules)")
    ap.add_argument("--azurite-plain", action="store_true", help="with --azurite, also the plain calls from Azurite")
    ap.add_argument("--profile-n", type=int, default=500, help="images of the profiled run; 0 skips it")
    ap.add_argument("--repeat", type=int, default=2, help="prefect/plain pairs, in ABBA order (default 2)")
    ap.add_argument("--poll-interval", type=float, default=None, help="override CURATION_POLL_INTERVAL_S (default 5)")
    ap.add_argument("--cache", type=Path, default=RESULTS / "cache", help="where synthetic images are kept")
    ap.add_argument("--tmp", type=Path, default=RESULTS, help="parent of the temporary data root and PREFECT_HOME")
    ap.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.tmp.mkdir(parents=True, exist_ok=True)
    if args.profile_child:
        profile_child(args)
        return

    n = args.n
    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-", dir=args.tmp))
    prepare_environment(work / "prefect-home")
    res: dict = {"n": n, "started": datetime.now().isoformat(timespec="seconds"), "python": platform.python_version(),
                 "cpu_count": os.cpu_count(), "machine": platform.machine()}
    try:
        paths = image_cache(max(n, WARMUP_IMAGES), args.cache)
        folder = dataset_folder(paths[:n], args.cache, "main")
        warm = dataset_folder(paths[:WARMUP_IMAGES], args.cache, "warm")
        sizes = [p.stat().st_size for p in paths[:n]]
        res["mean_jpeg_kb"] = sum(sizes) / len(sizes) / 1024

        for p in paths[:n]:  # into the page cache: the first floor must not pay disk reads the later runs do not
            p.read_bytes()
        print(f"[1/4] decode floor, {n} images, {os.cpu_count()} processes ...", flush=True)
        floors = [decode_floor(paths[:n])]
        print(f"      {floors[0]['seconds']:.1f} s, {floors[0]['images_per_s']:.1f} img/s, load {os.getloadavg()[0]:.1f}",
              flush=True)

        from curation.storage import LocalStorageConfig

        settings = make_settings(work / "data", args)
        res["poll_interval_s"] = settings.poll_interval_s
        config = LocalStorageConfig(path=folder)
        print("      warm-up: Prefect temporary server, embedded service, imports/JIT (untimed) ...", flush=True)
        res["warmup"] = {"prefect_server_s": warm_prefect()}
        t0 = time.perf_counter()
        run_plain(settings, LocalStorageConfig(path=warm), "warm-up")
        res["warmup"]["plain_240_s"] = time.perf_counter() - t0
        res["warmup"]["layout_5000_s"] = warm_layout()

        res["step_costs_ms"] = step_costs(paths[: min(n, 60)])

        # ABBA order (prefect, plain, plain, prefect) so that a load that drifts linearly cancels out.
        order = (["prefect", "plain", "plain", "prefect"] * args.repeat)[: 2 * args.repeat]
        runs: dict[str, list[dict]] = {"prefect": [], "plain": []}
        for i, label in enumerate(order):
            print(f"[{2 + i}/{len(order) + 2}] pipeline {'through Prefect' if label == 'prefect' else 'as plain calls'}, "
                  f"{n} images ...", flush=True)
            marks: dict[str, float] = {}
            with Meter() as m:
                if label == "prefect":
                    dataset_id = run_prefect(settings, config, f"bench-{label}-{n}-{i}")
                else:
                    dataset_id = run_plain(settings, config, f"bench-{label}-{n}-{i}", marks)
            runs[label].append({**m.as_dict(), **check_done(settings, dataset_id, n), **({"timeline_s": marks} if marks else {})})
            print(f"      {m.wall:.1f} s, {n / m.wall:.1f} img/s, load {os.getloadavg()[0]:.1f}", flush=True)
            _checkpoint(res, floors=floors, runs=runs)
            if i == len(order) // 2 - 1 and len(order) > 2:
                floors.append(decode_floor(paths[:n]))  # the machine is shared: the floor drifts too
        if args.azurite:  # before the last floor, so that the floors bracket every timed run
            print(f"[3b] Azurite, {n} images ...", flush=True)
            res["azurite"] = run_azure(args, paths[:n], settings, work)
            _checkpoint(res, floors=floors, runs=runs)
        floors.append(decode_floor(paths[:n]))
        for label, rs in runs.items():
            mean = lambda key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
            res[label] = {
                "seconds": mean("seconds"), "images_per_s": n / mean("seconds"), "cpu_s": mean("cpu_s"),
                "cpu_utilisation": mean("cpu_utilisation"), "children_cpu_s": mean("children_cpu_s"),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "runs": rs,
            }
        res["plain"]["timeline_s"] = runs["plain"][0]["timeline_s"]
        floor_s = sum(f["seconds"] for f in floors) / len(floors)
        res["floor"] = {"seconds": floor_s, "images_per_s": n / floor_s, "runs_s": [f["seconds"] for f in floors],
                        "workers": floors[0]["workers"], "cpu_s": sum(f["cpu_s"] for f in floors) / len(floors)}
        for k in ("prefect", "plain"):
            res[f"cpu_ratio_{k}_to_floor"] = (res[k]["cpu_s"] + res[k]["children_cpu_s"]) / res["floor"]["cpu_s"]
        res["ratio_prefect_to_floor"] = res["prefect"]["seconds"] / floor_s
        res["ratio_plain_to_floor"] = res["plain"]["seconds"] / floor_s
        res["prefect_overhead_pct"] = 100 * (res["prefect"]["seconds"] / res["plain"]["seconds"] - 1)
        cpu = {k: res[k]["cpu_s"] + res[k]["children_cpu_s"] for k in ("prefect", "plain")}
        res["prefect_cpu_overhead_pct"] = 100 * (cpu["prefect"] / cpu["plain"] - 1)


        if args.profile_n:
            print(f"[profile] profiling the Prefect run at N={args.profile_n} in a fresh process ...", flush=True)
            cmd = [sys.executable, __file__, "--profile-child", "--n", str(args.profile_n), "--cache", str(args.cache),
                   "--tmp", str(args.tmp)]
            if args.poll_interval is not None:
                cmd += ["--poll-interval", str(args.poll_interval)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROFILE-JSON ")), None)
            if line is None:
                res["profile_error"] = (proc.stderr or proc.stdout)[-3000:]
                print("profile failed:\n" + res["profile_error"], file=sys.stderr)
            else:
                res["profile"] = json.loads(line.split(" ", 1)[1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_table(res)
    out = RESULTS / f"pipeline-{n}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
