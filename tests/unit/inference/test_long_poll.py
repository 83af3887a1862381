"""The tracker long-polls the first unfinished shard job: the service answers as soon as the job ends (or after the
wait), so a shard is stored when it completes rather than a poll interval later.

No test here measures time (issue #17): they synchronise on events (the poll reached the service, the gate opened)
and a deadline only guards against a hang."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest
from pydantic import SecretStr

from curation.inference.client import InferenceClient, JobStatus, TransientServiceError
from curation.inference.models.cpu import CpuModel
from curation.inference.service import app as service_app
from curation.inference.service.app import create_app
from curation.inference.service.server import serve_in_thread
from curation.settings import Settings
from tests.images import write_images
from tests.waiting import DEADLINE_S

KEY = SecretStr("long-poll-key")
LONG_WAIT_S = 3600.0  # a long poll far longer than the test's hang deadline: answering after it would fail the test


class GatedModel(CpuModel):
    """The default model, held at a gate until the test opens it (in the service's threads, not worker processes)."""

    process_safe = False

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def predict(self, images):
        assert self.gate.wait(DEADLINE_S * 2), "the test never opened the gate"
        return super().predict(images)


@pytest.fixture
def gated(tmp_path, monkeypatch):
    """A service whose job is held at the gate; `polling` is set when a long poll (wait_s > 0) reaches the service
    while the job still runs."""
    # The service caps a long poll at MAX_WAIT_S; raised here so a poll may outlast the test's hang deadline
    # (the cap itself is checked with the real value below).
    monkeypatch.setattr(service_app, "MAX_WAIT_S", LONG_WAIT_S)
    gate, polling = threading.Event(), threading.Event()
    settings = Settings(service_workers=1, allow_file_urls=True, request_timeout_s=2.0, transient_budget_s=5.0)
    app = create_app(settings, GatedModel(gate), [KEY.get_secret_value()])
    runner = app.state.runner
    real_wait = runner.wait

    def wait(owner, job_id, timeout_s):
        job = runner.get(owner, job_id)
        if timeout_s > 0 and job is not None and not job.ended.is_set():
            polling.set()
        return real_wait(owner, job_id, timeout_s)

    runner.wait = wait
    running = serve_in_thread(app, KEY)
    names = write_images(tmp_path, 3)
    items = [{"image_id": n, "url": (tmp_path / n).as_uri(), "size": 1} for n in names]
    client = InferenceClient(running.url, KEY, settings)
    try:
        yield gate, polling, client, client.submit_job(items)
    finally:
        gate.set()
        client.close()
        running.stop()


def test_a_long_poll_answers_when_the_job_ends(gated):
    gate, polling, client, job_id = gated
    answers: list[JobStatus | BaseException] = []

    def poll() -> None:
        try:
            answers.append(client.wait_for_job(job_id, LONG_WAIT_S))
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            answers.append(exc)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    assert polling.wait(DEADLINE_S), "the long poll never reached the service"
    assert not answers, "the long poll answered while the job still ran"
    gate.set()  # the job can end now
    poller.join(DEADLINE_S)  # a poll that ran its full wait (an hour) would still be waiting here
    assert answers, f"the long poll did not answer when the job ended (it asked to wait {LONG_WAIT_S:.0f} s)"
    status = answers[0]
    assert isinstance(status, JobStatus), status
    assert status.status == "Completed" and status.done == 3


def test_a_long_poll_answers_after_the_wait_while_the_job_runs(gated):
    _, polling, client, job_id = gated
    status = client.wait_for_job(job_id, 0.5)  # the gate stays shut: the job cannot end, the wait does
    assert polling.is_set()  # it was a long poll on a running job
    assert status.status == "Processing"
    assert client.job_status(job_id).status == "Processing"  # a plain status call does not wait
    with pytest.raises(Exception, match="422"):
        client.wait_for_job(job_id, LONG_WAIT_S + 1)  # longer than the service's longest long poll


def test_the_service_caps_a_long_poll(tmp_path):
    settings = Settings(service_workers=1, allow_file_urls=True, request_timeout_s=2.0, transient_budget_s=5.0)
    running = serve_in_thread(create_app(settings, CpuModel(), [KEY.get_secret_value()]), KEY)
    try:
        # refused before the job is even looked up
        with InferenceClient(running.url, KEY, settings) as client, pytest.raises(Exception, match="422"):
            client.wait_for_job("any-job", service_app.MAX_WAIT_S + 1)
    finally:
        running.stop()


class CountingTransport(httpx.HTTPTransport):
    """The real transport, counting the requests the client sends through it."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        return super().handle_request(request)


def test_a_long_poll_is_one_attempt_when_the_service_is_down():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    transport = CountingTransport()
    settings = Settings(transient_budget_s=30.0, request_timeout_s=1.0)
    client = InferenceClient(f"http://127.0.0.1:{port}", KEY, settings, transport=transport)
    with pytest.raises(TransientServiceError):
        client.wait_for_job("job", 5.0)
    assert transport.attempts == 1  # not retried for the 30 s budget: the tracker's next poll retries
