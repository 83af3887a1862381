"""The results step after inference: reading every shard job's results from the service and writing the Parquet.

Usage:
    python bench/bench_results.py                      # quick: N = 2000 and 10000 (well under a minute)
    python bench/bench_results.py --n 2000 10000 100000 --repeat 3 --shard-size 256 --page-size 1000

For each N, the real service app (default model, never run: its jobs are filled in) serves N synthetic results
over real HTTP on loopback, cut into completed shard jobs of --shard-size images as the pipeline submits them:
216-d unit float32 embeddings, labels and confidences for every category, 2% failed images (an error, no tags, no
embedding). N synthetic thumbnail-shard rows are written to a temporary data root. Then, as
`curation.dataset.finish.write_dataset_results` does, every job's pages are fetched with the real `InferenceClient` and written by
`curation.dataset.results.write_results` (files, metadata, embeddings Parquet):

  json    `iter_results`: JSON pages (the service encodes every float; the client decodes them into Python lists)
  arrow   `iter_result_tables`: Arrow IPC pages (columns built from the result objects; embeddings stay float32)

The 3D layout (UMAP, a separate cost) is replaced by zeros here, so the figures are the transport and the writing.
Time inside the page iterator is "fetch" (HTTP, service encoding, client decoding), the rest is "write".
Measured per path: wall seconds, process CPU seconds (the client thread plus the service's threads: the service
runs in this process) and the calling thread's CPU seconds (time.thread_time). The machine is shared, so CPU
times are the steadier figures; the best of --repeat runs is reported. Both paths must write identical Parquet.
Prints a table and writes bench/results/results-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import support
from polars.testing import assert_frame_equal
from pydantic import SecretStr
from support import RESULTS

from curation.dataset import results as results_module
from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.parquet_io import rows_to_table, shard_schema
from curation.inference.client import InferenceClient
from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.jobs import ImageResult, Job, JobItem
from curation.inference.service.server import serve_in_thread
from curation.inference.service.usage import key_id
from curation.inference.thumbnails import signal_names
from curation.settings import Settings
from curation.taxonomy import DEFAULT_TAXONOMY

KEY = "bench-results-key"
DATASET = "0123456789abcdef01234567"
DIM = 216
FAILED_SHARE = 0.02


def synthetic_jobs(n: int, shard_size: int, rng: np.random.Generator) -> list[Job]:
    """Completed jobs of shard_size results each, as the service holds them after inference."""
    labels = {c: [*v, None] for c, v in DEFAULT_TAXONOMY.classes.items()}
    vectors = rng.standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    failed = rng.random(n) < FAILED_SHARE
    jobs = []
    for shard, start in enumerate(range(0, n, shard_size)):
        ids = [f"{i:016x}" for i in range(start, min(n, start + shard_size))]
        job = Job(id=f"{shard:032x}", owner=key_id(KEY), items=[JobItem(i, "file:///x.jpg") for i in ids],
                  model="cpu-rules-v1", embedding_model="cpu-descriptor-v1", status="Completed")
        for k, image_id in enumerate(ids, start):
            if failed[k]:
                job.results.append(ImageResult(image_id, None, None, "HTTP 404 from the storage"))
            else:
                tags = {c: (v[int(rng.integers(0, len(v)))], float(rng.uniform(0.3, 1))) for c, v in labels.items()}
                job.results.append(ImageResult(image_id, tags, vectors[k].copy(), None))
        jobs.append(job)
    return jobs


def store_at(root: Path) -> DatasetStore:
    return Catalog(root).dataset(DATASET)


def write_shards(root: Path, n: int, shard_size: int) -> None:
    """The thumbnail shards write_results reads the dataset's image ids (and decode errors) from."""
    store = store_at(root)
    schema = shard_schema(signal_names())
    for shard, start in enumerate(range(0, n, shard_size)):
        rows = [{"image_id": f"{i:016x}", "blob_name": f"img_{i}.jpg", "size": 1500, "width": 64, "height": 48,
                 "format": "jpeg", "thumbnail": f"t/{i}.jpg", "error": None, "content_hash": f"{i:064x}"}
                for i in range(start, min(n, start + shard_size))]
        store.write_files_shard(shard, rows_to_table(rows, schema))


class Clock:
    """Wall, process CPU and calling-thread CPU seconds."""

    def __init__(self) -> None:
        self.wall = self.cpu = self.thread = 0.0

    def __enter__(self) -> Clock:
        self._start = (time.perf_counter(), time.process_time(), time.thread_time())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu, thread = self._start
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.thread += time.thread_time() - thread


def timed_pages(pages: Iterable[Any], clock: Clock) -> Iterator[Any]:
    """The pages, with the time spent producing each one added to clock."""
    iterator = iter(pages)
    while True:
        with clock:
            page = next(iterator, None)
        if page is None:
            return
        yield page


def run_path(url: str, jobs: list[Job], root: Path, fetch: Callable[[InferenceClient, str], Iterable[Any]],
             settings: Settings) -> dict[str, float]:
    fetching, total = Clock(), Clock()
    with InferenceClient(url, SecretStr(KEY), settings) as client:

        def pages() -> Iterator[Any]:
            for job in jobs:
                yield from fetch(client, job.id)

        with total:
            written = results_module.write_results(store_at(root), timed_pages(pages(), fetching), DEFAULT_TAXONOMY)
    assert written.images == sum(len(j.items) for j in jobs)
    return {
        "fetch_wall_s": fetching.wall, "fetch_cpu_s": fetching.cpu, "fetch_thread_cpu_s": fetching.thread,
        "write_wall_s": total.wall - fetching.wall, "write_cpu_s": total.cpu - fetching.cpu,
        "write_thread_cpu_s": total.thread - fetching.thread,
        "total_wall_s": total.wall, "total_cpu_s": total.cpu, "total_thread_cpu_s": total.thread,
    }


def same_output(a: Path, b: Path) -> None:
    for table in (Table.FILES, Table.METADATA, Table.EMBEDDINGS):
        assert_frame_equal(store_at(a).frame(table), store_at(b).frame(table))


def bench_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(n)
    jobs = synthetic_jobs(n, args.shard_size, rng)
    app = create_app(Settings(service_workers=1), CpuModel(), api_keys=[KEY])
    app.state.runner.jobs.update({j.id: j for j in jobs})
    running = serve_in_thread(app, SecretStr(KEY))
    settings = Settings(request_timeout_s=60)
    paths: dict[str, Callable[[InferenceClient, str], Iterable[Any]]] = {
        "json": lambda c, job_id: c.iter_results(job_id, args.page_size),
        "arrow": lambda c, job_id: c.iter_result_tables(job_id, args.page_size),
    }
    work = Path(tempfile.mkdtemp(prefix=f"bench-results-{n}-", dir=RESULTS))
    best: dict[str, dict[str, float]] = {}
    try:
        for name in paths:
            write_shards(work / name, n, args.shard_size)
        for _ in range(args.repeat):
            for name, fetch in paths.items():
                run = run_path(running.url, jobs, work / name, fetch, settings)
                if name not in best or run["total_cpu_s"] < best[name]["total_cpu_s"]:
                    best[name] = run
        same_output(work / "json", work / "arrow")
    finally:
        running.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {"n": n, "jobs": len(jobs), "paths": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--repeat", type=int, default=2, help="runs per path; the one with the least CPU is kept")
    parser.add_argument("--shard-size", type=int, default=256, help="images per job (CURATION_SHARD_SIZE)")
    parser.add_argument("--page-size", type=int, default=1000, help="results per page (CURATION_RESULTS_PAGE_SIZE)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    # The 3D layout is its own step's cost (UMAP); here it would only add the same seconds to both paths.
    results_module.layout_3d = lambda m: np.zeros((len(m), 3), dtype=np.float32)

    runs = []
    for n in args.n:
        runs.append(bench_size(n, args))
        print(f"N={n:,} done", flush=True)
    head = ["N", "path", "fetch s", "fetch CPU", "write s", "write CPU", "total s", "total CPU", "thread CPU",
            "CPU ms/img", "CPU x arrow"]
    rows = []
    for run in runs:
        arrow_cpu = run["paths"]["arrow"]["total_cpu_s"]
        for name, r in run["paths"].items():
            rows.append([f"{run['n']:,}", name, f"{r['fetch_wall_s']:.2f}", f"{r['fetch_cpu_s']:.2f}",
                         f"{r['write_wall_s']:.2f}", f"{r['write_cpu_s']:.2f}", f"{r['total_wall_s']:.2f}",
                         f"{r['total_cpu_s']:.2f}", f"{r['total_thread_cpu_s']:.2f}",
                         f"{1000 * r['total_cpu_s'] / run['n']:.3f}", f"{r['total_cpu_s'] / arrow_cpu:.1f}"])
    support.print_table(f"results step (fetch every shard job's pages + write Parquet, no 3D layout); shards of "
                        f"{args.shard_size}, pages of {args.page_size}; best of {args.repeat}; CPU = process CPU "
                        "seconds", head, rows)
    support.write_result("results", {"args": vars(args), "runs": runs})


if __name__ == "__main__":
    main()
