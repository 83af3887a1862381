"""The inference service is killed (SIGKILL) mid-job and restarted: the run completes, nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import SecretStr

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.inference.client import InferenceClient
from curation.inference.result_pages import file_fields
from curation.inference.thumbnails import decode_with_facts, signal_names
from curation.settings import Settings
from tests.waiting import DEADLINE_S, wait_for

KEY = "restart-test-key"
COUNT = 80  # five batches of 16: two journalled before the kill, the rest after the restart
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a new service could listen on the port (no process of the killed one holds it any more)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def start_service(port: int, state: Path, log: Path, held_after: int | None = None) -> subprocess.Popen:
    """`curation serve` on the port, journalling under `state`; with held_after, the same service whose model
    answers that many batches and then holds (tests.integration.gated_service_child: it logs "holding")."""
    env = dict(
        os.environ,
        CURATION_SERVICE_API_KEYS=KEY,
        CURATION_ALLOW_FILE_URLS="true",
        CURATION_SERVICE_STATE_DIR=str(state),
        CURATION_SERVICE_WORKERS="1",
        PYTHONPATH=str(REPO),
    )
    if held_after is None:
        command = [str(Path(sys.executable).parent / "curation"), "serve", "--port", str(port)]
    else:
        command = [sys.executable, "-m", "tests.integration.gated_service_child", str(port), str(held_after)]
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
    )

    def healthy() -> bool:
        assert process.poll() is None, f"the service exited: {log.read_text()[-2000:]}"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(healthy, "the service answering /healthz", detail=lambda: log.read_text()[-2000:], poll_s=0.1)
    return process


def kill_when_held(service: subprocess.Popen, port: int, state: Path, log: Path) -> int:
    """Wait until the held service holds its job's next batch (the earlier batches' results are journalled, the
    job cannot end), SIGKILL it, and wait until its port is free. The count of journalled results."""
    wait_for(lambda: "holding" in log.read_text(), "the service holding a batch", detail=lambda: log.read_text()[-2000:])
    [journalled] = list(state.glob("*/results.jsonl"))  # one job
    lines = journalled.read_text().splitlines()
    os.killpg(service.pid, signal.SIGKILL)
    service.wait()
    wait_for(lambda: port_is_free(port), f"port {port} released by the killed service")
    return len(lines)


def test_service_killed_mid_job_and_restarted(tmp_path, settings):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(COUNT):
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(images / f"img_{i:03d}.png")
    port, state, log = free_port(), tmp_path / "service-state", tmp_path / "service.log"
    service = start_service(port, state, log, held_after=2)
    url = f"http://127.0.0.1:{port}"
    run_settings = settings.model_copy(  # the run's retries ride out the restart, however long it takes
        update={"service_url": url, "api_key": SecretStr(KEY), "transient_budget_s": 600, "shard_size": COUNT}
    )
    cr = Curation(settings=run_settings)
    outcome: dict[str, object] = {}

    def curate() -> None:
        try:
            outcome["id"] = cr.curate_dataset("survives a restart", LocalStorageConfig(path=images), wait=True)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    runner = threading.Thread(target=curate, daemon=True)
    runner.start()
    try:
        journalled = kill_when_held(service, port, state, log)
        assert journalled == 32, journalled  # two batches; the job is mid-way (it cannot have finished)
        service = start_service(port, state, log)
        runner.join(timeout=DEADLINE_S * 2)
        assert not runner.is_alive(), "the run did not finish after the restart"
    finally:
        os.killpg(service.pid, signal.SIGKILL)
    assert "error" not in outcome, outcome.get("error")
    record = cr.get_dataset(outcome["id"])
    assert record.status.value == "Completed" and record.counts.processed == COUNT
    store = Catalog(run_settings.data_root).dataset(record.id)
    files = store.frame(Table.FILES)
    assert files.height == COUNT and files["image_id"].n_unique() == COUNT and files["error"].null_count() == COUNT
    embeddings = store.frame(Table.EMBEDDINGS)
    assert embeddings.height == COUNT and embeddings["image_id"].n_unique() == COUNT


def test_a_restarted_service_returns_the_journalled_facts_and_thumbnails(tmp_path):
    """Results journalled before a SIGKILL keep their file facts and thumbnails; the rest get theirs after it."""
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(images / f"img_{i:02d}.png")
    (images / "broken.png").write_bytes(b"not an image")
    items = [{"image_id": p.name, "url": p.as_uri(), "size": 1} for p in sorted(images.iterdir())]
    port, state, log = free_port(), tmp_path / "service-state", tmp_path / "service.log"
    service = start_service(port, state, log, held_after=1)
    url = f"http://127.0.0.1:{port}"
    client_settings = Settings(transient_budget_s=60)
    try:
        with InferenceClient(url, SecretStr(KEY), client_settings) as client:
            job_id = client.submit_job(items, idempotency_key="files-restart", thumbnail_side=128)
            before = kill_when_held(service, port, state, log)  # one batch journalled, the job mid-way
            service = start_service(port, state, log)
            wait_for(lambda: client.job_status(job_id).finished, "the resumed job finishing", poll_s=0.05)
            table = pa.concat_tables(client.iter_result_tables(job_id))
    finally:
        os.killpg(service.pid, signal.SIGKILL)
    assert before == 16  # these results came back from the journal
    assert sorted(table["image_id"].to_pylist()) == [i["image_id"] for i in items]
    fields = [f.name for f in file_fields(signal_names()) if f.name != "thumbnail"]
    for row in table.to_pylist():
        made = decode_with_facts((images / row["image_id"]).read_bytes(), 128)
        assert row["thumbnail"] == made.thumbnail, row["image_id"]
        assert {n: row[n] for n in fields} == {n: made.facts.get(n) for n in fields}, row["image_id"]
    assert table["thumbnail"].null_count == 1 and table["content_hash"].null_count == 0
