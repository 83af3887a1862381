"""The inference service is killed (SIGKILL) mid-job and restarted: the run completes, nothing lost or doubled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
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
from curation.inference.shard_jobs import read_jobs
from curation.inference.thumbnails import decode_with_facts, signal_names
from curation.settings import Settings

KEY = "restart-test-key"
COUNT = 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(port: int, state: Path, log: Path) -> subprocess.Popen:
    env = dict(
        os.environ,
        CURATION_SERVICE_API_KEYS=KEY,
        CURATION_ALLOW_FILE_URLS="true",
        CURATION_SERVICE_STATE_DIR=str(state),
        CURATION_SERVICE_WORKERS="1",
    )
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "curation"), "serve", "--port", str(port)],
        env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"service did not start: {log.read_text()[-2000:]}")


def test_service_killed_mid_job_and_restarted(tmp_path, settings):
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(COUNT):  # PNGs decode without draft mode, so the job lasts a few seconds
        Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(images / f"img_{i:03d}.png")
    port, state, log = free_port(), tmp_path / "service-state", tmp_path / "service.log"
    service = start_service(port, state, log)
    url = f"http://127.0.0.1:{port}"
    run_settings = settings.model_copy(
        update={"service_url": url, "api_key": SecretStr(KEY), "transient_budget_s": 90, "shard_size": COUNT}
    )
    cr = Curation(settings=run_settings)
    catalog = Catalog(run_settings.data_root)
    outcome: dict[str, object] = {}

    def curate() -> None:
        try:
            outcome["id"] = cr.curate_dataset("survives a restart", LocalStorageConfig(path=images), wait=True)
        except Exception as exc:  # reported below
            outcome["error"] = exc

    runner = threading.Thread(target=curate)
    runner.start()
    try:
        job_id, done_at_kill = None, 0
        with InferenceClient(url, SecretStr(KEY), run_settings) as client:
            for _ in range(1200):
                records = catalog.records()
                jobs = read_jobs(catalog.dataset(records[0].id)) if records else []
                job_id = jobs[0].job_id if jobs else None  # one shard: one job
                if job_id:
                    status = client.job_status(job_id)
                    if status.done >= 16:
                        done_at_kill = status.done
                        break
                time.sleep(0.05)
        assert job_id and 16 <= done_at_kill < COUNT, f"job finished before the kill ({done_at_kill})"
        os.killpg(service.pid, signal.SIGKILL)
        service.wait()
        time.sleep(1.0)
        service = start_service(port, state, log)
        runner.join(timeout=300)
    finally:
        os.killpg(service.pid, signal.SIGKILL)
    assert "error" not in outcome, outcome.get("error")
    record = cr.get_dataset(outcome["id"])
    assert record.status.value == "Completed" and record.counts.processed == COUNT
    store = catalog.dataset(record.id)
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
    service = start_service(port, state, log)
    url = f"http://127.0.0.1:{port}"
    client_settings = Settings(transient_budget_s=60)
    try:
        with InferenceClient(url, SecretStr(KEY), client_settings) as client:
            job_id = client.submit_job(items, idempotency_key="files-restart", thumbnail_side=128)
            for _ in range(600):
                if client.job_status(job_id).done >= 16:
                    break
                time.sleep(0.02)
            before = client.job_status(job_id).done
            os.killpg(service.pid, signal.SIGKILL)
            service.wait()
            service = start_service(port, state, log)
            for _ in range(600):
                if client.job_status(job_id).finished:
                    break
                time.sleep(0.05)
            table = pa.concat_tables(client.iter_result_tables(job_id))
    finally:
        os.killpg(service.pid, signal.SIGKILL)
    assert before >= 16  # these results came back from the journal
    assert sorted(table["image_id"].to_pylist()) == [i["image_id"] for i in items]
    fields = [f.name for f in file_fields(signal_names()) if f.name != "thumbnail"]
    for row in table.to_pylist():
        made = decode_with_facts((images / row["image_id"]).read_bytes(), 128)
        assert row["thumbnail"] == made.thumbnail, row["image_id"]
        assert {n: row[n] for n in fields} == {n: made.facts.get(n) for n in fields}, row["image_id"]
    assert table["thumbnail"].null_count == 1 and table["content_hash"].null_count == 0
