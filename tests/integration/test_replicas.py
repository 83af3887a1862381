"""Per-shard inference jobs over several real service replicas, failover when one is killed, and shard tasks that a
retried flow run does not redo (Prefect's cache, persisted results without secrets)."""

from __future__ import annotations

import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.inference.client import InferenceClient
from curation.inference.models.cpu import CpuModel
from curation.inference.replicas import public_url
from curation.inference.service.app import create_app
from curation.inference.service.server import serve_in_thread
from curation.inference.shard_jobs import SubmittedShard, read_jobs
from curation.settings import Settings, use_settings
from tests.images import write_images
from tests.waiting import DEADLINE_S

pytestmark = pytest.mark.integration

KEY = "replica-test-key-5d1e"
COUNT = 40
SHARD = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replica(port: int, log: Path) -> subprocess.Popen:
    """`curation serve` in its own process group: one worker, so its jobs take a moment; no journal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(CURATION_SERVICE_API_KEYS=KEY, CURATION_ALLOW_FILE_URLS="true", CURATION_SERVICE_WORKERS="1")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "curation"), "serve", "--port", str(port)],
        env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    for _ in range(3000):  # until it answers (a loaded machine starts it slowly), or dies; a guard, not a timing
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"replica did not start: {log.read_text()[-2000:]}")


def test_two_replicas_one_killed_mid_run(tmp_path, settings):
    rng = np.random.default_rng(7)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(COUNT):  # PNGs decode without draft mode: each shard job takes the single worker a moment
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(images / f"img_{i:03d}.png")
    ports = [free_port(), free_port()]
    a, b = (start_replica(p, tmp_path / f"replica-{n}.log") for n, p in zip("ab", ports, strict=True))
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    # A killed replica refuses connections at once, so finding it down costs the transient budget, not the request
    # timeout; a generous request timeout keeps the healthy replica's slow answers on a loaded machine from looking
    # like a loss (a 2 s timeout made A's shards "lost" too, under load).
    run = settings.model_copy(
        update={
            "service_url": ",".join(urls), "api_key": SecretStr(KEY), "shard_size": SHARD,
            "transient_budget_s": 3.0, "request_timeout_s": 60.0, "poll_interval_s": 0.2,
        }
    )
    cr = Curation(settings=run)
    outcome: dict[str, object] = {}

    def curate() -> None:
        try:
            outcome["id"] = cr.curate_dataset("two replicas", LocalStorageConfig(path=images), wait=True)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    runner = threading.Thread(target=curate)
    started = time.monotonic()
    runner.start()
    try:
        on_b: list[str] = []
        while runner.is_alive():  # the event: a shard job file naming B; then kill B, and check it really holds it
            records = Catalog(run.data_root).records()
            jobs = read_jobs(Catalog(run.data_root).dataset(records[0].id)) if records else []
            on_b = [j.job_id for j in jobs if j.replica == public_url(urls[1])]
            if on_b:
                break
            time.sleep(0.02)
        assert on_b, "no shard was submitted to the second replica"
        with InferenceClient(urls[1], SecretStr(KEY), run) as client:
            assert client.job_status(on_b[0]).total == SHARD
        os.killpg(b.pid, signal.SIGKILL)
        b.wait()
        runner.join(timeout=300)
        elapsed = time.monotonic() - started
        with InferenceClient(urls[0], SecretStr(KEY), run) as client:
            usage_a = client.usage()["rows"]
    finally:
        for process in (a, b):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert not runner.is_alive() and "error" not in outcome, outcome.get("error")

    record = cr.get_dataset(outcome["id"])
    assert record.status.value == "Completed", record.failure_reason
    assert (record.counts.accepted, record.counts.processed, record.counts.failed) == (COUNT, COUNT, 0)
    store = Catalog(run.data_root).dataset(record.id)
    files = store.frame(Table.FILES)
    assert files.height == COUNT and files["image_id"].n_unique() == COUNT and files["error"].null_count() == COUNT
    embeddings = store.frame(Table.EMBEDDINGS)
    assert embeddings.height == COUNT and embeddings["image_id"].n_unique() == COUNT

    # The invariant: every shard ended Completed on A, each image stored once (above). Round-robin gave B only odd
    # shards, and each one B held was moved to A. Whether A itself ever looked lost (a slow answer on a loaded
    # machine) is not asserted: if it did, its shard was re-submitted to A, and stored once all the same.
    a, b = public_url(urls[0]), public_url(urls[1])
    jobs = read_jobs(store)
    assert [j.shard for j in jobs] == list(range(COUNT // SHARD)) and sum(j.count for j in jobs) == COUNT
    assert all(j.replica == a and j.status == "Completed" for j in jobs)
    moved = [j for j in jobs if any(h.startswith(b) for h in j.history)]
    assert moved and all(j.shard % 2 == 1 and j.history[0].startswith(b) for j in moved)
    assert set(on_b) <= {h.split()[1].rstrip(":") for j in moved for h in j.history if h.startswith(b)}
    # A processed every image: its own shards and those moved from B; once each, unless A's own shard was re-submitted.
    again_on_a = sum(j.count for j in jobs if any(h.startswith(a) for h in j.history))
    assert COUNT <= sum(r["processed"] for r in usage_a) <= COUNT + again_on_a
    assert sum(r["failed"] for r in usage_a) == 0
    print(f"two replicas, one killed: {COUNT} images in {elapsed:.1f}s, moved to A: {[j.history for j in moved]}")


class RefuseSubmissions:
    """After `allow` job submissions, answer further ones 503 until healed; everything else is the real app.
    `healed` is a flag, or an event checked on each submission."""

    def __init__(self, app: ASGIApp, allow: int, healed: threading.Event | None = None) -> None:
        self.app, self.allow, self.passed, self.refused = app, allow, 0, 0
        self.healed: bool | threading.Event = healed if healed is not None else False

    def _healed(self) -> bool:
        return self.healed.is_set() if isinstance(self.healed, threading.Event) else bool(self.healed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/jobs":
            if self.passed >= self.allow and not self._healed():
                self.refused += 1
                await JSONResponse({"detail": "busy"}, status_code=503)(scope, receive, send)
                return
            self.passed += 1
        await self.app(scope, receive, send)


def test_flow_retry_does_not_redo_finished_shards(tmp_path, settings, monkeypatch):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId
    from prefect.results import ResultRecord
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    import curation.flows.curate_dataset
    from curation.flows.curate_dataset import curate_dataset

    # The service recovers once the first attempt has marked its dataset Failed, and not before: that attempt's
    # submission of shard 2 is refused for its whole retry budget, the flow run's retry (after Prefect's delay,
    # however short or long it really is) finds the service well. An event, not a race with the retry delay.
    first_attempt_failed = threading.Event()
    failures: list[str] = []
    mark_failed = curation.flows.curate_dataset.mark_failed

    def marking_failed(store, reason, *args, **kwargs):
        result = mark_failed(store, reason, *args, **kwargs)
        failures.append(reason)
        first_attempt_failed.set()
        return result

    monkeypatch.setattr(curation.flows.curate_dataset, "mark_failed", marking_failed)
    names = write_images(tmp_path / "images", COUNT)
    app = create_app(Settings(allow_file_urls=True, service_workers=2), CpuModel(), [KEY])
    front = RefuseSubmissions(app, allow=2, healed=first_attempt_failed)
    running = serve_in_thread(front, SecretStr(KEY))
    run = settings.model_copy(
        update={"service_url": running.url, "api_key": SecretStr(KEY), "shard_size": SHARD, "transient_budget_s": 1.5}
    )
    flow = curate_dataset.with_options(retries=1, retry_delay_seconds=2)
    result: dict[str, object] = {}

    def curate() -> None:
        with use_settings(run):
            result["state"] = flow("retried", LocalStorageConfig(path=tmp_path / "images"), return_state=True)

    runner = threading.Thread(target=curate, daemon=True)
    runner.start()
    try:
        runner.join(timeout=DEADLINE_S * 2)  # a guard against a hang only
        assert not runner.is_alive(), "the flow run (and its retry) did not finish"
    finally:
        running.stop()
    # The first attempt failed at shard 2's refused submission (and only there), the dataset marked Failed once.
    assert front.refused > 0 and len(failures) == 1, failures
    state = result["state"]
    assert state.is_completed(), state.message

    [record] = Catalog(run.data_root).records()  # the retry kept the dataset its first attempt registered
    assert record.status.value == "Completed" and record.counts.processed == COUNT, record.failure_reason
    files = Catalog(run.data_root).dataset(record.id).frame(Table.FILES)
    assert sorted(files["blob_name"]) == sorted(names) and files["error"].null_count() == COUNT

    with get_client(sync_client=True) as client:
        run_ids = [state.state_details.flow_run_id]  # the flow run and its track-curation subflow runs
        run_ids += [r.id for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=run_ids)))]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)))
    states = {
        name: Counter(r.state.name for r in runs if r.name.startswith(name))
        for name in ("submit-shard", "store-shard", "register-dataset")
    }
    # Each shard was submitted once: shards 0 and 1 in the first attempt (Cached in the retry), shard 2 failed
    # there, and shards 2-4 were submitted by the retry.
    assert states["submit-shard"] == Counter({"Completed": 5, "Cached": 2, "Failed": 1}), states
    # Each shard's results were stored once, by the retry (the first attempt failed before tracking).
    assert states["store-shard"] == Counter({"Completed": 5}), states
    assert states["register-dataset"] == Counter({"Completed": 1, "Cached": 1}), states

    # The persisted shard results are ids and counts: no key, no signed or file URL, no path.
    stored = [p for p in Path(PREFECT_LOCAL_STORAGE_PATH.value()).glob(f"*{record.id}*") if p.is_file()]
    values = [ResultRecord.deserialize(p.read_bytes()).result for p in stored]
    assert Counter(type(v).__name__ for v in values) == Counter({"int": 5, "SubmittedShard": 5}), values
    for path, value in zip(stored, values, strict=True):
        for text in (path.read_bytes().decode("latin-1"), pickle.dumps(value).decode("latin-1"), repr(value)):
            assert KEY not in text and "file://" not in text and "sig=" not in text and str(tmp_path) not in text
    assert {v.shard for v in values if isinstance(v, SubmittedShard)} == set(range(COUNT // SHARD))


def test_a_replica_down_from_the_start_costs_one_budget_and_the_other_takes_every_shard(tmp_path, settings):
    names = write_images(tmp_path / "images", COUNT)
    running = serve_in_thread(create_app(Settings(allow_file_urls=True), CpuModel(), [KEY]), SecretStr(KEY))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run = settings.model_copy(
        update={
            "service_url": f"{dead},{running.url}", "api_key": SecretStr(KEY), "shard_size": SHARD,
            # The dead replica refuses connections at once, so only the budget decides how long it is tried; the
            # live one may be slow on a loaded machine, so its requests get a long timeout.
            "transient_budget_s": 1.0, "request_timeout_s": 60.0,
        }
    )
    try:
        cr = Curation(settings=run)
        started = time.monotonic()
        dataset_id = cr.curate_dataset("one replica down", LocalStorageConfig(path=tmp_path / "images"), wait=True)
        elapsed = time.monotonic() - started
    finally:
        running.stop()
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed" and record.counts.processed == COUNT, record.failure_reason
    store = Catalog(run.data_root).dataset(dataset_id)
    files = store.frame(Table.FILES)
    assert sorted(files["blob_name"]) == sorted(names) and files["error"].null_count() == COUNT
    jobs = read_jobs(store)
    assert len(jobs) == COUNT // SHARD and all(j.replica == running.url and not j.history for j in jobs)
    # Found down by check-service and by shard 0's submission; the later shards skipped it without waiting.
    print(f"one replica down from the start: {COUNT} images in {elapsed:.1f}s")
