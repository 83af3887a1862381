"""The service protects itself (issue #17): the key is checked before the body is read, bodies and jobs are capped,
keys are served round-robin with a per-key limit, an Idempotency-Key names one request, a running job can be
released, and a finished job's journal keeps no signed URL. Synchronised on events, never on time."""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi.testclient import TestClient

from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.jobs import BATCH_SIZE, Job, JobItem, JobRunner
from curation.inference.service.journal import JobJournal
from curation.inference.service.usage import UsageLedger, key_id
from curation.settings import Settings
from tests.images import write_images

KEY, OTHER = "limits-key", "other-limits-key"
WAIT = 60  # seconds: only a hang guard; every wait below returns on an event


class GatedModel(CpuModel):
    """The real rules model, whose first predict call waits until the test opens the gate: the first batch is then
    known to be running, and every later one to be queued behind it. Runs in the batch thread (not process safe)."""

    process_safe = False

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()
        self.calls: list[int] = []

    def predict(self, images):  # noqa: ANN001, ANN201 - the backend protocol
        self.calls.append(len(images))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT), "the test never opened the gate"
        return super().predict(images)


def items_for(folder, count: int, prefix: str = "img", query: str = "") -> list[JobItem]:
    """count items over one real image (distinct ids, one file)."""
    name = write_images(folder, 1)[0]
    url = (folder / name).as_uri() + query
    return [JobItem(f"{prefix}-{i:05d}", url, 1) for i in range(count)]


def as_json(items: list[JobItem]) -> list[dict[str, object]]:
    return [{"image_id": i.image_id, "url": i.url, "size": i.size} for i in items]


def client_for(app, key: str = KEY) -> TestClient:
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


# -- 1 and 2: the key before the body; capped bodies and jobs ----------------------------------------------------------
def call_asgi(app, headers: dict[str, str], chunks: int, chunk: bytes) -> tuple[int, dict, int]:
    """POST /v1/jobs straight through ASGI with a body of `chunks` chunks handed out one receive() at a time:
    (status, JSON answer, chunks the app pulled)."""
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled >= chunks:
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/jobs", "raw_path": b"/v1/jobs", "query_string": b"", "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1), "server": ("testserver", 80),
    }
    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def test_a_wrong_key_gets_401_before_any_of_the_body_is_read():
    app = create_app(Settings(service_max_body_bytes=1024 * 1024), CpuModel(), api_keys=[KEY])
    chunk = b"x" * (1024 * 1024)
    for headers in (
        {"authorization": "Bearer wrong", "content-length": str(64 * len(chunk))},  # declared, far over the cap
        {"content-type": "application/json"},  # no key at all, streamed (no length)
    ):
        status, answer, pulled = call_asgi(app, headers, chunks=64, chunk=chunk)
        assert (status, pulled) == (401, 0), answer  # not 413: the body was never looked at
        assert "invalid API key" in answer["detail"]
    app.state.runner.close()


def test_a_body_over_the_cap_is_refused_413_without_reading_past_the_cap():
    cap = 256 * 1024
    app = create_app(Settings(service_max_body_bytes=cap), CpuModel(), api_keys=[KEY])
    chunk = b" " * (64 * 1024)
    auth = {"authorization": f"Bearer {KEY}"}
    status, answer, pulled = call_asgi(app, auth, chunks=1000, chunk=chunk)  # streamed, no Content-Length
    assert status == 413 and pulled == cap // len(chunk) + 1
    assert f"{cap} bytes" in answer["detail"] and "CURATION_SERVICE_MAX_BODY_BYTES" in answer["detail"]
    status, answer, pulled = call_asgi(app, {**auth, "content-length": str(cap + 1)}, chunks=5, chunk=chunk)
    assert (status, pulled) == (413, 0)  # the declared length is enough
    app.state.runner.close()


def test_too_many_items_is_413_and_a_malformed_body_422_without_echoing_urls(tmp_path):
    app = create_app(Settings(service_max_job_items=3, allow_file_urls=True), CpuModel(), api_keys=[KEY])
    client = client_for(app)
    items = as_json(items_for(tmp_path, 4, query="?sv=1&sig=SECRETSIG"))
    answer = client.post("/v1/jobs", json={"items": items})
    assert answer.status_code == 413
    assert "at most 3 items" in answer.json()["detail"] and "CURATION_SERVICE_MAX_JOB_ITEMS" in answer.json()["detail"]
    bad = client.post("/v1/jobs", json={"items": [{**items[0], "size": "not a number"}]})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "items", 0, "size"]
    assert "SECRETSIG" not in bad.text
    assert client.post("/v1/jobs", content=b"{not json").status_code == 422
    accepted = client.post("/v1/jobs", json={"items": items[:3], "thumbnail_side": 64})
    assert accepted.status_code == 202 and accepted.json()["total"] == 3
    app.state.runner.close()


# -- 3: round-robin between keys, a per-key limit, and the same after a restart ---------------------------------------
def test_a_small_job_of_another_key_is_not_stuck_behind_a_big_one(tmp_path):
    backend = GatedModel()
    runner = JobRunner(backend, Settings(service_workers=1, allow_file_urls=True), UsageLedger())
    try:
        big = runner.submit("key-a", items_for(tmp_path / "a", 10 * BATCH_SIZE), None)
        assert backend.entered.wait(WAIT)  # a's first batch runs; its 9 others are queued
        small = runner.submit("key-b", items_for(tmp_path / "b", 1), None)
        backend.gate.set()
        assert small.ended.wait(WAIT)
        # One batch thread: when b's job ended, a had had at most its running batch and one turn.
        assert len(big.results) <= 2 * BATCH_SIZE < len(big.items) // 2
        assert big.ended.wait(WAIT) and len(big.results) == len(big.items)
    finally:
        backend.gate.set()
        runner.close()


def test_a_restarted_service_resumes_journalled_jobs_through_the_same_scheduler(tmp_path):
    state = tmp_path / "state"
    journalled = Job(id="a" * 32, owner="key-a", items=items_for(tmp_path / "a", 10 * BATCH_SIZE), model="m",
                     embedding_model="e")
    JobJournal(state).record_job(journalled)  # as a killed service left it: no result yet
    backend = GatedModel()
    settings = Settings(service_workers=1, allow_file_urls=True, service_state_dir=state)
    runner = JobRunner(backend, settings, UsageLedger())
    try:
        big = runner.jobs[journalled.id]
        assert backend.entered.wait(WAIT)
        small = runner.submit("key-b", items_for(tmp_path / "b", 1), None)
        backend.gate.set()
        assert small.ended.wait(WAIT)
        assert len(big.results) <= 2 * BATCH_SIZE
    finally:
        backend.gate.set()
        runner.close()


def test_a_key_past_its_queued_images_limit_gets_429_with_retry_after(tmp_path):
    backend = GatedModel()
    settings = Settings(service_workers=1, allow_file_urls=True, service_max_queued_images_per_key=2 * BATCH_SIZE)
    app = create_app(settings, backend, api_keys=[KEY, OTHER])
    mine, theirs = client_for(app), client_for(app, OTHER)
    batch = as_json(items_for(tmp_path, BATCH_SIZE))
    try:
        first = mine.post("/v1/jobs", json={"items": batch}).json()["job_id"]
        assert backend.entered.wait(WAIT)
        assert mine.post("/v1/jobs", json={"items": batch}).status_code == 202  # 32 queued or running: the limit
        refused = mine.post("/v1/jobs", json={"items": batch[:1]})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "CURATION_SERVICE_MAX_QUEUED_IMAGES_PER_KEY" in refused.json()["detail"]
        assert theirs.post("/v1/jobs", json={"items": batch}).status_code == 202  # another key has its own limit
        backend.gate.set()
        assert mine.get(f"/v1/jobs/{first}", params={"wait_s": WAIT}).json()["status"] == "Completed"
    finally:
        backend.gate.set()
        app.state.runner.close()


# -- 4: an Idempotency-Key names one request ---------------------------------------------------------------------------
def test_an_idempotency_key_reused_with_another_body_is_422_and_kept_across_a_restart(tmp_path):
    state = tmp_path / "state"
    settings = Settings(allow_file_urls=True, service_state_dir=state, service_workers=1)
    items = items_for(tmp_path, 3, query="?sv=1&sig=FIRST")
    app = create_app(settings, CpuModel(), api_keys=[KEY])
    client = client_for(app)
    key = {"Idempotency-Key": "ds-00001-abc-a0"}
    job_id = client.post("/v1/jobs", json={"items": as_json(items)}, headers=key).json()["job_id"]
    resigned = [JobItem(i.image_id, i.url.replace("FIRST", "SECOND"), i.size) for i in items]  # a new SAS
    assert client.post("/v1/jobs", json={"items": as_json(resigned)}, headers=key).json()["job_id"] == job_id
    for other in ({"items": as_json(items[:2])}, {"items": as_json(items), "thumbnail_side": 64},
                  {"items": as_json(items), "models": ["meta"]}):
        answer = client.post("/v1/jobs", json=other, headers=key)
        assert answer.status_code == 422 and "different request" in answer.json()["detail"], other
        assert job_id in answer.json()["detail"] and "sig=" not in answer.text
    app.state.runner.close()
    restarted = client_for(create_app(settings, CpuModel(), api_keys=[KEY]))
    assert restarted.post("/v1/jobs", json={"items": as_json(items[:2])}, headers=key).status_code == 422
    assert restarted.post("/v1/jobs", json={"items": as_json(items)}, headers=key).json()["job_id"] == job_id
    restarted.app.state.runner.close()


def test_a_journal_written_before_request_hashes_still_loads_and_keeps_its_key(tmp_path):
    state = tmp_path / "state"
    old = Job(id="b" * 32, owner=key_id(KEY), items=items_for(tmp_path, 2), model="m", embedding_model="e",
              idempotency_key="legacy")
    JobJournal(state).record_job(old)
    meta_path = state / old.id / "job.json"
    meta = json.loads(meta_path.read_text())
    del meta["request_hash"]
    meta_path.write_text(json.dumps(meta))
    app = create_app(Settings(allow_file_urls=True, service_state_dir=state), CpuModel(), api_keys=[KEY])
    client = client_for(app)
    answer = client.post("/v1/jobs", json={"items": []}, headers={"Idempotency-Key": "legacy"})
    assert answer.json()["job_id"] == old.id  # no hash to compare: the old behaviour
    app.state.runner.close()


# -- DELETE of a running job cancels it ----------------------------------------------------------------------------
def test_releasing_a_running_job_cancels_its_queued_batches(tmp_path):
    backend = GatedModel()
    state = tmp_path / "state"
    settings = Settings(service_workers=1, allow_file_urls=True, service_state_dir=state)
    app = create_app(settings, backend, api_keys=[KEY])
    client = client_for(app)
    try:
        items = as_json(items_for(tmp_path / "a", 3 * BATCH_SIZE))
        job_id = client.post("/v1/jobs", json={"items": items}).json()["job_id"]
        assert backend.entered.wait(WAIT)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert client.get(f"/v1/jobs/{job_id}").status_code == 404 and not (state / job_id).exists()
        backend.gate.set()
        later = client.post("/v1/jobs", json={"items": as_json(items_for(tmp_path / "b", 1, prefix="b"))}).json()
        assert client.get(f"/v1/jobs/{later['job_id']}", params={"wait_s": WAIT}).json()["status"] == "Completed"
        # One batch thread: the later job's batch ran where the cancelled job's second would have.
        assert backend.calls == [BATCH_SIZE, 1]
        assert [(r["processed"], r["failed"]) for r in client.get("/v1/usage").json()["rows"]] == [(1, 0)]
        assert not (state / job_id).exists()  # the running batch's results were not journalled after the release
    finally:
        backend.gate.set()
        app.state.runner.close()


# -- 5: a finished job's journal holds no signed URL -------------------------------------------------------------------
def test_a_finished_jobs_journal_keeps_no_signed_url_and_still_serves_its_results_after_a_restart(tmp_path):
    state = tmp_path / "state"
    settings = Settings(allow_file_urls=True, service_state_dir=state, service_workers=1)
    client = client_for(create_app(settings, CpuModel(), api_keys=[KEY]))
    items = as_json(items_for(tmp_path / "images", 20, query="?sv=2024-01-01&se=2030&sp=r&sig=S3cr3tSig%3D"))
    job_id = client.post("/v1/jobs", json={"items": items}).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", params={"wait_s": WAIT}).json()["status"] == "Completed"
    client.app.state.runner.close()
    files = [p for p in state.rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"job.json", "items.jsonl", "results.jsonl"}
    for path in files:
        text = path.read_text()
        assert "sig=" not in text and "S3cr3tSig" not in text and "file:" not in text, path
    restarted = client_for(create_app(settings, CpuModel(), api_keys=[KEY]))
    status = restarted.get(f"/v1/jobs/{job_id}").json()
    assert (status["status"], status["done"], status["failed"]) == ("Completed", 20, 0)
    page = restarted.get(f"/v1/jobs/{job_id}/results", params={"limit": 100}).json()
    assert sorted(r["image_id"] for r in page["items"]) == [i["image_id"] for i in items]
    restarted.app.state.runner.close()
