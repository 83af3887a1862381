"""The FastAPI app in-process (TestClient): auth, jobs, results, usage, URL refusal."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.settings import Settings
from tests.images import write_images
from tests.waiting import wait_for

KEY = "unit-test-key"


def make_client(**overrides) -> TestClient:
    settings = Settings(service_workers=2, **overrides)
    return TestClient(create_app(settings, CpuModel(), api_keys=[KEY]), headers={"Authorization": f"Bearer {KEY}"})


def wait_done(client: TestClient, job_id: str) -> dict:
    def ended() -> dict | None:
        body = client.get(f"/v1/jobs/{job_id}").json()
        return body if body["status"] != "Processing" else None

    return wait_for(ended, f"job {job_id} finishing")


def test_missing_or_wrong_key_gets_401():
    client = make_client()
    assert client.get("/v1/jobs/x", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get("/v1/usage", headers={"Authorization": ""})
    assert response.status_code == 401
    assert "invalid API key" in response.json()["detail"]


def test_service_refuses_to_start_without_keys():
    with pytest.raises(RuntimeError, match="at least one API key"):
        create_app(Settings(), CpuModel(), api_keys=[])


def test_job_processes_images_and_reports_per_image_errors(tmp_path):
    names = write_images(tmp_path, 5)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    client = make_client(allow_file_urls=True)
    items = [{"image_id": n, "url": (tmp_path / n).as_uri(), "size": 1} for n in [*names, "broken.jpg"]]
    submitted = client.post("/v1/jobs", json={"items": items}, headers={"Idempotency-Key": "ds1"})
    assert submitted.status_code == 202
    job_id = submitted.json()["job_id"]
    # the same idempotency key returns the same job instead of doubling the work
    assert client.post("/v1/jobs", json={"items": items}, headers={"Idempotency-Key": "ds1"}).json()["job_id"] == job_id
    status = wait_done(client, job_id)
    assert (status["status"], status["total"], status["done"], status["failed"]) == ("Completed", 6, 6, 1)
    page = client.get(f"/v1/jobs/{job_id}/results", params={"offset": 0, "limit": 4}).json()
    rest = client.get(f"/v1/jobs/{job_id}/results", params={"offset": page["next_offset"], "limit": 4}).json()
    results = {r["image_id"]: r for r in page["items"] + rest["items"]}
    assert rest["next_offset"] is None and len(results) == 6
    assert results["broken.jpg"]["error"] and results["broken.jpg"]["tags"] is None
    good = results[names[0]]
    assert good["error"] is None and set(good["tags"]) == {"time", "weather", "road", "location"}
    assert len(good["embedding"]) == CpuModel().embedding_dim
    usage = client.get("/v1/usage").json()["rows"]
    assert [(r["processed"], r["failed"], r["model"]) for r in usage] == [(5, 1, "cpu-rules-v1")]


def test_other_keys_cannot_read_a_job(tmp_path):
    settings = Settings(allow_file_urls=True)
    app = create_app(settings, CpuModel(), api_keys=[KEY, "other-key"])
    mine = TestClient(app, headers={"Authorization": f"Bearer {KEY}"})
    theirs = TestClient(app, headers={"Authorization": "Bearer other-key"})
    job_id = mine.post("/v1/jobs", json={"items": []}).json()["job_id"]
    assert mine.get(f"/v1/jobs/{job_id}").status_code == 200
    assert theirs.get(f"/v1/jobs/{job_id}").status_code == 404


@pytest.mark.parametrize(
    ("url", "reason"),
    [("file:///etc/passwd", "file:// URLs"), ("http://127.0.0.1:9/a.jpg", "non-public"), ("ftp://x/a.jpg", "unsupported")],
)
def test_remote_service_refuses_file_and_private_urls(url, reason):
    client = make_client()
    job_id = client.post("/v1/jobs", json={"items": [{"image_id": "a", "url": url}]}).json()["job_id"]
    wait_done(client, job_id)
    [item] = client.get(f"/v1/jobs/{job_id}/results").json()["items"]
    assert reason in item["error"]


def test_a_released_job_is_forgotten_with_its_journal(tmp_path):
    """(A running job's release cancels it: tests/unit/inference/test_service_limits.py.)"""
    names = write_images(tmp_path / "images", 40)
    state = tmp_path / "state"
    client = make_client(allow_file_urls=True, service_state_dir=state)
    items = [{"image_id": n, "url": (tmp_path / "images" / n).as_uri(), "size": 1} for n in names]
    job_id = client.post("/v1/jobs", json={"items": items}).json()["job_id"]
    wait_done(client, job_id)
    assert (state / job_id / "job.json").exists()
    assert client.delete(f"/v1/jobs/{job_id}", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (state / job_id).exists()  # the journal (signed URLs) goes too
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 404


def test_finished_jobs_nobody_released_are_forgotten_after_the_retention_time(tmp_path):
    names = write_images(tmp_path, 3)
    client = make_client(allow_file_urls=True, service_job_retention_s=0.0)
    items = [{"image_id": n, "url": (tmp_path / n).as_uri(), "size": 1} for n in names]
    old = client.post("/v1/jobs", json={"items": items}).json()["job_id"]
    wait_done(client, old)
    new = client.post("/v1/jobs", json={"items": items}).json()["job_id"]  # a submission sweeps
    assert client.get(f"/v1/jobs/{old}").status_code == 404 and client.get(f"/v1/jobs/{new}").status_code == 200
