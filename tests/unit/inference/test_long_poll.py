"""The tracker long-polls the first unfinished shard job: the service answers as soon as the job ends (or after the
wait), so a shard is stored when it completes rather than a poll interval later."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydantic import SecretStr

from curation.inference.client import InferenceClient, TransientServiceError
from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.server import serve_in_thread
from curation.settings import Settings
from tests.images import write_images

KEY = SecretStr("long-poll-key")


class GatedModel(CpuModel):
    """The default model, held at a gate until the test opens it (in the service's threads, not worker processes)."""

    process_safe = False

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def predict(self, images):
        assert self.gate.wait(20), "the test never opened the gate"
        return super().predict(images)


@pytest.fixture
def gated(tmp_path):
    gate = threading.Event()
    settings = Settings(service_workers=1, allow_file_urls=True, request_timeout_s=2.0, transient_budget_s=5.0)
    running = serve_in_thread(create_app(settings, GatedModel(gate), [KEY.get_secret_value()]), KEY)
    names = write_images(tmp_path, 3)
    items = [{"image_id": n, "url": (tmp_path / n).as_uri(), "size": 1} for n in names]
    client = InferenceClient(running.url, KEY, settings)
    try:
        yield gate, client, client.submit_job(items)
    finally:
        gate.set()
        client.close()
        running.stop()


def test_a_long_poll_answers_when_the_job_ends(gated):
    gate, client, job_id = gated
    threading.Timer(0.5, gate.set).start()
    start = time.monotonic()
    status = client.wait_for_job(job_id, 10.0)  # longer than the client's 2 s request timeout: it is extended
    elapsed = time.monotonic() - start
    assert status.status == "Completed" and status.done == 3
    assert 0.4 < elapsed < 5.0, elapsed


def test_a_long_poll_answers_after_the_wait_while_the_job_runs(gated):
    _, client, job_id = gated
    start = time.monotonic()
    status = client.wait_for_job(job_id, 0.6)
    assert status.status == "Processing" and 0.55 < time.monotonic() - start < 3.0
    assert client.job_status(job_id).status == "Processing"  # a plain status call does not wait
    with pytest.raises(Exception, match="422"):
        client.wait_for_job(job_id, 61.0)  # longer than the service's longest long poll


def test_a_long_poll_is_one_attempt_when_the_service_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    client = InferenceClient(f"http://127.0.0.1:{port}", KEY, Settings(transient_budget_s=30.0, request_timeout_s=1.0))
    start = time.monotonic()
    with pytest.raises(TransientServiceError):
        client.wait_for_job("job", 5.0)
    assert time.monotonic() - start < 3.0  # not the 30 s retry budget: the tracker's next poll retries
