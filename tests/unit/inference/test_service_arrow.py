"""Results as an Arrow IPC stream: content negotiation, paging headers, failed images, auth (the app in-process)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curation.inference.models.cpu import CpuModel
from curation.inference.result_pages import ARROW_STREAM, from_ipc, page_schema
from curation.inference.service.app import wants_arrow
from curation.inference.service.jobs import ImageResult, Job, JobItem
from curation.inference.service.usage import key_id
from curation.taxonomy import CATEGORIES
from tests.images import write_images
from tests.unit.inference.test_service import KEY, make_client, wait_done

ARROW = {"Accept": ARROW_STREAM}


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("images")
    names = write_images(folder, 5)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    client = make_client(allow_file_urls=True)
    items = [{"image_id": n, "url": (folder / n).as_uri(), "size": 1} for n in [*names, "broken.jpg"]]
    job_id = client.post("/v1/jobs", json={"items": items}).json()["job_id"]
    assert wait_done(client, job_id)["status"] == "Completed"
    return client, job_id


def test_arrow_pages_carry_the_same_results_as_json_with_paging_headers(finished_job):
    client, job_id = finished_job
    first = client.get(f"/v1/jobs/{job_id}/results", params={"offset": 0, "limit": 4}, headers=ARROW)
    assert first.status_code == 200 and first.headers["content-type"] == ARROW_STREAM
    assert (first.headers["x-total"], first.headers["x-next-offset"]) == ("6", "4")
    last = client.get(f"/v1/jobs/{job_id}/results", params={"offset": 4, "limit": 4}, headers=ARROW)
    assert last.headers["x-total"] == "6" and "x-next-offset" not in last.headers
    table = pa.concat_tables([from_ipc(first.content), from_ipc(last.content)])
    assert table.schema == page_schema(CATEGORIES, CpuModel().embedding_dim)
    assert table.num_rows == 6

    json_items = client.get(f"/v1/jobs/{job_id}/results", params={"limit": 10}).json()["items"]
    assert table["image_id"].to_pylist() == [i["image_id"] for i in json_items]
    for row, item in zip(table.to_pylist(), json_items, strict=True):
        assert row["error"] == item["error"]
        for category in CATEGORIES:
            tag = (item["tags"] or {}).get(category) or {}
            assert row[category] == tag.get("label")
            assert row[f"{category}_confidence"] == (None if not tag else pytest.approx(tag["confidence"], rel=1e-6))
        if item["embedding"] is None:
            assert row["embedding"] is None
        else:
            np.testing.assert_array_equal(np.float32(row["embedding"]), np.float32(item["embedding"]))


def test_a_failed_image_has_an_error_null_tags_and_a_null_embedding(finished_job):
    client, job_id = finished_job
    table = from_ipc(client.get(f"/v1/jobs/{job_id}/results", headers=ARROW).content)
    broken = table.filter(pa.compute.equal(table["image_id"], "broken.jpg")).to_pylist()[0]
    assert broken["error"] and broken["embedding"] is None
    assert all(broken[c] is None and broken[f"{c}_confidence"] is None for c in CATEGORIES)
    assert table["embedding"].null_count == 1 and table["error"].null_count == 5


def test_json_stays_the_default(finished_job):
    client, job_id = finished_job
    for accept in (None, "*/*", "application/json", f"{ARROW_STREAM};q=0"):
        response = client.get(f"/v1/jobs/{job_id}/results", headers={"Accept": accept} if accept else {})
        assert response.headers["content-type"] == "application/json", accept
        assert len(response.json()["items"]) == 6 and "x-total" not in response.headers


def test_arrow_requests_keep_auth_and_not_found(finished_job):
    client, job_id = finished_job
    wrong = client.get(f"/v1/jobs/{job_id}/results", headers={**ARROW, "Authorization": "Bearer wrong"})
    assert wrong.status_code == 401 and "invalid API key" in wrong.json()["detail"]
    missing = client.get("/v1/jobs/0000/results", headers=ARROW)
    assert missing.status_code == 404 and missing.json()["detail"] == "no job 0000"
    assert client.get(f"/v1/jobs/{job_id}/results", params={"limit": 0}, headers=ARROW).status_code == 422
    assert KEY not in client.get(f"/v1/jobs/{job_id}/results", headers=ARROW).content.decode("latin-1")


def test_a_running_job_pages_only_its_finished_rows():
    client = make_client()
    items = [JobItem(f"i{k}", "http://example.invalid/x.jpg") for k in range(3)]
    job = Job(id="running", owner=key_id(KEY), items=items, model="m", embedding_model="e")
    job.results.append(ImageResult("i0", {"time": ("day", 0.9)}, np.arange(4, dtype=np.float32), None))
    client.app.state.runner.jobs[job.id] = job  # as if two of its images were still being processed
    first = client.get("/v1/jobs/running/results", headers=ARROW)
    assert (first.headers["x-total"], first.headers["x-next-offset"]) == ("3", "1")
    row = from_ipc(first.content).to_pylist()
    assert row == [{"image_id": "i0", "error": None, "time": "day", "time_confidence": pytest.approx(0.9),
                    **{k: None for c in CATEGORIES[1:] for k in (c, f"{c}_confidence")}, "embedding": [0, 1, 2, 3]}]
    rest = client.get("/v1/jobs/running/results", params={"offset": 1}, headers=ARROW)
    assert from_ipc(rest.content).num_rows == 0 and rest.headers["x-next-offset"] == "1"


@pytest.mark.parametrize(
    ("accept", "arrow"),
    [
        (ARROW_STREAM, True),
        (f"{ARROW_STREAM}, application/json;q=0.5", True),
        (f"application/json, {ARROW_STREAM.upper()};q=0.9", True),
        (f"{ARROW_STREAM};q=0", False),
        (f"{ARROW_STREAM};q=x", False),
        ("application/json", False),
        ("*/*", False),
        (None, False),
    ],
)
def test_accept_header_negotiation(accept, arrow):
    assert wants_arrow(accept) is arrow
