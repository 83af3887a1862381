"""What the bench scripts share: synthetic images, a process meter, settings, Prefect set-up, the two ways to run a
curation, tables and JSON results. It measures nothing itself.

A script in bench/ imports it as `import support` (Python puts the script's folder first on sys.path); importing
it also puts the repository on sys.path, for `tests.azurite` and friends.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = RESULTS / "cache"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

W, H = 1920, 1080  # the synthetic images: 1080p JPEGs, quality 85
THUMB = 256  # the pipeline's thumbnail side
WARMUP_IMAGES = 240  # > 200, so a warm-up curation takes curation.analysis.layout's UMAP path too (numba JIT)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic images
# ---------------------------------------------------------------------------------------------------------------

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


def image_cache(n: int, cache: Path = CACHE) -> list[Path]:
    """The first n synthetic 1920x1080 JPEGs, generated in parallel the first time they are asked for."""
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


def dataset_folder(paths: list[Path], tag: str, cache: Path = CACHE) -> Path:
    """A folder holding exactly these images, to curate from (hard links into the cache; copies when links fail)."""
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


def thumbnail_floor(path: str) -> int:
    """The least work a thumbnail needs: read, decode once (JPEG draft mode to >= 256 px short side, as
    curation.inference.imaging does), 256-px thumbnail, JPEG encode. Returns the thumbnail's size in bytes."""
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


def read_into_page_cache(paths: list[Path]) -> None:
    """Read the files once, so that the first timed run does not pay disk reads the later ones do not."""
    for p in paths:
        p.read_bytes()


# ---------------------------------------------------------------------------------------------------------------
# Processes: memory and CPU from /proc (Linux)
# ---------------------------------------------------------------------------------------------------------------


def status_kb(pid: int | str, key: str) -> int:
    """A field of /proc/<pid>/status in KiB (VmRSS, VmHWM); 0 when the process or the field is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int | str = "self") -> bool:
    """Set the process's VmHWM to its current VmRSS (through clear_refs); False where the kernel refuses."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    """Every live process below pid (children, grandchildren, ...)."""
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process; 0.0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Meter:
    """Wall, CPU and peak RSS of a block, for this process and the processes below it that are alive when the block
    starts (e.g. the service's worker processes and Prefect's temporary server, started by a warm-up)."""

    def __enter__(self) -> Self:
        self.kids = descendants(os.getpid())
        for k in self.kids:
            reset_peak(k)
        self.reset = reset_peak()
        self.kid_cpu0 = {k: cpu_seconds(k) for k in self.kids}
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.cpu0
        self.kid_cpu = sum(max(0.0, cpu_seconds(k) - c) for k, c in self.kid_cpu0.items())
        self.peak_mb = status_kb("self", "VmHWM") / 1024 if self.reset else (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self.kid_peak_mb = sum(status_kb(k, "VmHWM") for k in self.kids) / 1024

    def as_dict(self) -> dict[str, float]:
        return {"seconds": self.wall, "cpu_s": self.cpu, "children_cpu_s": self.kid_cpu, "peak_rss_mb": self.peak_mb,
                "peak_rss_reset": self.reset, "children_peak_rss_mb": self.kid_peak_mb}


# ---------------------------------------------------------------------------------------------------------------
# Settings and Prefect
# ---------------------------------------------------------------------------------------------------------------


def bench_settings(data_root: Path, poll_interval: float | None = None, **update: Any):
    """The environment's settings (CURATION_*) on a private data root, with the poll interval when given."""
    from curation.settings import Settings

    changes: dict[str, Any] = {"data_root": data_root, **update}
    if poll_interval is not None:
        changes["poll_interval_s"] = poll_interval
    return Settings().model_copy(update=changes)


def prepare_prefect(home: Path) -> None:
    """An ephemeral Prefect in a private home (no configured API, profile or key); call before prefect is imported."""
    for key in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE"):
        os.environ.pop(key, None)
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    # A fresh home migrates its database at the first start; on a loaded 2-core machine that exceeds the 20 s default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry heartbeats into the SQLite db


def warm_prefect() -> float:
    """Run a trivial flow, so that Prefect's temporary server is up before any clock; returns its seconds."""
    from prefect import flow

    @flow(name="bench-warmup")
    def bench_warmup() -> int:
        return 1

    t0 = time.perf_counter()
    bench_warmup()
    return time.perf_counter() - t0


def warm_layout(rows: int = 5000, dim: int = 64) -> float:
    """Run the 3D layout once (umap's import, numba's JIT or its on-disk cache); returns its seconds."""
    import numpy as np

    from curation.analysis.layout import layout_3d

    t0 = time.perf_counter()
    layout_3d(np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32))
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------------------
# A curation, through Prefect or as plain calls
# ---------------------------------------------------------------------------------------------------------------


def curate_prefect(settings, config, name: str) -> str:
    """The curate-dataset flow, tracked to its end (the SDK's `curate_dataset(..., wait=True)`); returns the id."""
    from curation import Curation

    with Curation(settings=settings) as curation:
        return curation.curate_dataset(name, config, wait=True)


def curate_plain(settings, config, name: str, marks: dict[str, float] | None = None) -> str:
    """The same curation as plain library calls, tracked by curation.tracking.track_plain; returns the id.

    marks, when given, receives the seconds from the start at which each step ended."""
    from curation.dataset.registry import DatasetType
    from curation.inference.shard_jobs import COMPLETED
    from curation.inference.shards import check_replicas, shards, submit_shard
    from curation.ingest.steps import list_and_validate, register_dataset
    from curation.ingest.storage import open_storage
    from curation.run import open_run
    from curation.tracking import track_plain

    t0 = time.perf_counter()
    marks = {} if marks is None else marks

    def mark(step: str) -> None:
        marks.setdefault(step, time.perf_counter() - t0)

    with open_run(settings, config) as run:
        storage = open_storage(config, run.settings)
        report = list_and_validate(storage, run.settings.min_images)
        mark("list+validate")
        check_replicas(run.replicas)
        mark("check service")
        record = register_dataset(run.catalog, storage, report, name, DatasetType.USER)
        mark("register")
        store = run.dataset(record.id)
        for i, blobs in enumerate(shards(report.accepted, run.settings.shard_size)):
            submit_shard(storage, run.replicas, run.settings, store, i, blobs)
        mark("sign+submit")
        track_plain(run, record.id, on_progress=lambda p: mark("inference done") if p.status == COMPLETED else None)
        mark("complete")
    return record.id


def check_done(settings, dataset_id: str, n: int) -> dict[str, object]:
    """Raise unless the dataset Completed with all n images processed; returns its status and counts."""
    from curation.dataset.catalog import Catalog

    record = Catalog(settings.data_root).dataset(dataset_id).load_record()
    c = record.counts
    if record.status.value != "Completed" or c.accepted != n or c.processed + c.failed != n:
        raise RuntimeError(f"dataset {dataset_id}: {record.status.value}, counts {c}, reason {record.failure_reason}")
    return {"status": record.status.value, "processed": c.processed, "failed": c.failed}


# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    print(f"\n== {title}")
    for r in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


CHILD_MARK = "RESULT-JSON "


def emit(result: dict) -> None:
    """Hand a child process's result to its parent (run_child), as one marked line on stdout."""
    print(CHILD_MARK + json.dumps(result, default=str), flush=True)


def run_child(args: list[str], what: str) -> dict:
    """Run `python *args` in a fresh process (so its peak RSS is its own) and return the result it emitted; exit
    with its output's tail when it fails."""
    proc = subprocess.run([sys.executable, *args], check=False, capture_output=True, text=True, cwd=REPO)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(CHILD_MARK)), None)
    if proc.returncode or line is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{what} failed (exit {proc.returncode})")
    return json.loads(line[len(CHILD_MARK) :])


def machine() -> dict[str, object]:
    """What a result was measured on."""
    import platform

    return {"python": platform.python_version(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "loadavg": os.getloadavg()[0], "started": datetime.now().isoformat(timespec="seconds")}


def checkpoint(stem: str, data: dict) -> Path:
    """The measurements so far in bench/results/<stem>-partial.json, for a long run stopped before its table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}-partial.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def write_result(stem: str, data: dict | list) -> Path:
    """Write bench/results/<stem>-<timestamp>.json (dropping the stem's partial checkpoint) and say where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    (RESULTS / f"{stem}-partial.json").unlink(missing_ok=True)
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
