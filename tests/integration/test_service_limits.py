"""The real service over HTTP protects itself and keeps usage honest (issue #17): a wrong key is refused before the
body is read, an oversized body by its declared length, keys are served in turn, and a resumed run takes back the
job a restarted service finished from its journal instead of processing (and charging) its images twice.

Synchronised on events (a gate in the model, job states, files appearing), never on elapsed time."""

from __future__ import annotations

import socket
import threading
import time

import httpx
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog
from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.server import serve_in_thread
from curation.inference.shard_jobs import read_jobs
from curation.settings import Settings
from tests.images import write_images
from tests.integration.conftest import SERVICE_KEY
from tests.unit.inference.test_service_limits import WAIT, GatedModel, as_json, items_for

OTHER_KEY = "integration-other-key"


def raw_post(url: str, headers: dict[str, str], body_sent: bytes) -> str:
    """POST /v1/jobs over a plain socket, sending only `body_sent` of the declared body, and read the status line:
    the service must answer without waiting for the rest."""
    host, port = httpx.URL(url).host, httpx.URL(url).port
    with socket.create_connection((host, port), timeout=WAIT) as sock:  # the timeout only guards against a hang
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\n{head}\r\n".encode() + body_sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.decode("latin-1")


def test_the_real_service_refuses_a_wrong_key_and_an_oversized_body_without_reading_them():
    settings = Settings(service_max_body_bytes=1024 * 1024, service_workers=1)
    running = serve_in_thread(create_app(settings, CpuModel(), api_keys=[SERVICE_KEY]), SecretStr(SERVICE_KEY))
    try:
        declared = str(300 * 1024 * 1024)  # 300 MB announced, 1 KB sent
        wrong = raw_post(running.url, {"Authorization": "Bearer wrong", "Content-Length": declared}, b"{" * 1024)
        assert wrong.startswith("HTTP/1.1 401"), wrong
        big = raw_post(running.url, {"Authorization": f"Bearer {SERVICE_KEY}", "Content-Length": declared}, b"{")
        assert big.startswith("HTTP/1.1 413"), big
        auth = {"Authorization": f"Bearer {SERVICE_KEY}"}
        ok = httpx.post(f"{running.url}/v1/jobs", json={"items": []}, headers=auth)
        assert ok.status_code == 202  # the service is still well
    finally:
        running.stop()


def test_the_real_service_serves_keys_in_turn(tmp_path):
    backend = GatedModel()
    settings = Settings(service_workers=1, allow_file_urls=True)
    running = serve_in_thread(create_app(settings, backend, api_keys=[SERVICE_KEY, OTHER_KEY]), SecretStr(SERVICE_KEY))
    try:
        with httpx.Client(base_url=running.url, timeout=WAIT + 10) as http:
            a = {"Authorization": f"Bearer {SERVICE_KEY}"}
            b = {"Authorization": f"Bearer {OTHER_KEY}"}
            big = http.post("/v1/jobs", json={"items": as_json(items_for(tmp_path / "a", 160))}, headers=a).json()
            assert backend.entered.wait(WAIT)
            small = http.post("/v1/jobs", json={"items": as_json(items_for(tmp_path / "b", 1))}, headers=b).json()
            backend.gate.set()
            done = http.get(f"/v1/jobs/{small['job_id']}", params={"wait_s": WAIT}, headers=b).json()
            assert done["status"] == "Completed"
            assert http.get(f"/v1/jobs/{big['job_id']}", params={"wait_s": WAIT}, headers=a).json()["done"] == 160
        # The model's calls in order (images per batch): b's one image came third, not after a's ten batches.
        assert backend.calls.index(1) <= 2 and len(backend.calls) == 11
    finally:
        backend.gate.set()
        running.stop()


class Blackout:
    """The real app behind a front door that answers 503 to every /v1 call while `down` is set: to its clients the
    service is gone, while it goes on with its jobs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app, self.down = app, threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.down.is_set() and scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await JSONResponse({"detail": "unavailable"}, status_code=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def test_a_resumed_run_takes_back_the_job_a_restarted_service_finished_and_usage_counts_each_image_once(
    tmp_path, settings
):
    """The issue's scenario: the run fails while the service is unreachable; the service, restarted from its
    journal, finishes the job; the resumed run must take that job back (and release it once stored), not submit a
    new one: usage counts each image once and no journal (no signed URL) is left behind."""
    count = 40
    write_images(tmp_path / "images", count)
    state, usage = tmp_path / "service-state", tmp_path / "usage.json"
    service_settings = Settings(allow_file_urls=True, service_workers=2, service_state_dir=state, usage_path=usage)
    first = Blackout(create_app(service_settings, CpuModel(), api_keys=[SERVICE_KEY]))
    running = serve_in_thread(first, SecretStr(SERVICE_KEY))
    port = int(running.url.rsplit(":", 1)[1])
    run_settings = settings.model_copy(
        update={"service_url": running.url, "shard_size": count, "transient_budget_s": 2, "poll_interval_s": 0.1}
    )
    catalog = Catalog(run_settings.data_root)
    cr = Curation(settings=run_settings)
    storage = LocalStorageConfig(path=tmp_path / "images")
    outcome: dict[str, str] = {}
    run = threading.Thread(target=lambda: outcome.update(id=cr.curate_dataset("resumed", storage, wait=True)))
    run.start()
    try:
        for _ in range(WAIT * 20):  # until the shard's job is recorded: the service then goes dark to the run
            records = catalog.records()
            if records and read_jobs(catalog.dataset(records[0].id)):
                break
            time.sleep(0.05)
        first.down.set()
        run.join(WAIT * 4)
        assert not run.is_alive()
        dataset_id = outcome["id"]
        assert cr.get_dataset(dataset_id).status.value == "Failed"
        (job,) = read_jobs(catalog.dataset(dataset_id))
        assert job.status == "Lost"
        assert first.app.state.runner.jobs[job.job_id].ended.wait(WAIT)  # the service finished it meanwhile
        running.stop()
        running = serve_in_thread(create_app(service_settings, CpuModel(), api_keys=[SERVICE_KEY]),
                                  SecretStr(SERVICE_KEY), port=port)  # restarted: the job comes from the journal
        assert cr.curate_dataset("resumed", storage, wait=True, resume=dataset_id) == dataset_id
        record = cr.get_dataset(dataset_id)
        assert record.status.value == "Completed" and record.counts.processed == count
        (taken_back,) = read_jobs(catalog.dataset(dataset_id))
        assert taken_back.job_id == job.job_id  # no new job
        with httpx.Client(base_url=running.url, headers={"Authorization": f"Bearer {SERVICE_KEY}"}) as http:
            rows = http.get("/v1/usage").json()["rows"]
        assert sum(r["processed"] + r["failed"] for r in rows) == count
        assert list(state.iterdir()) == []  # released once stored: no journal, no signed URL left
    finally:
        first.down.clear()
        run.join(WAIT)
        running.stop()
