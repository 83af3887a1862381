"""InferenceClient.iter_result_tables: against the real service over real HTTP, and its retries at the boundary."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pydantic import SecretStr

from curation.inference.client import AuthenticationError, InferenceClient, JobNotFound, ServiceError
from curation.inference.result_pages import ARROW_STREAM, file_fields, from_items, page_schema, to_ipc
from curation.inference.service.server import RunningService, start_in_thread
from curation.settings import Settings
from curation.taxonomy import CATEGORIES
from curation.inference.thumbnails import decode_with_facts, signal_names
from tests.images import write_images
from tests.unit.inference.test_client import client_for
from tests.waiting import wait_for

KEY = "arrow-client-key"
N = 33


@pytest.fixture(scope="module")
def service() -> Iterator[RunningService]:
    running = start_in_thread(Settings(allow_file_urls=True, service_workers=2), SecretStr(KEY))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("images")
    write_images(folder, N)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def _run(service: RunningService, folder, key: str, thumbnail_side: int | None = None) -> str:
    items = [{"image_id": p.name, "url": p.as_uri(), "size": 1} for p in sorted(folder.iterdir())]
    with InferenceClient(service.url, SecretStr(KEY), Settings()) as client:
        job_id = client.submit_job(items, idempotency_key=key, thumbnail_side=thumbnail_side)
        wait_for(lambda: client.job_status(job_id).finished, f"job {job_id} finishing")
    return job_id


@pytest.fixture(scope="module")
def job(service: RunningService, folder) -> str:
    return _run(service, folder, "arrow-client")


def test_a_job_without_a_thumbnail_side_has_no_file_columns(service: RunningService, job: str) -> None:
    with InferenceClient(service.url, SecretStr(KEY), Settings()) as client:
        [table] = list(client.iter_result_tables(job))
    assert table.schema == page_schema(CATEGORIES, table.schema.field("embedding").type.list_size)
    assert "thumbnail" not in table.column_names


def test_a_thumbnail_side_brings_facts_and_thumbnails_in_the_pages(service: RunningService, folder) -> None:
    job_id = _run(service, folder, "arrow-client-files", thumbnail_side=256)
    with InferenceClient(service.url, SecretStr(KEY), Settings()) as client:
        tables = list(client.iter_result_tables(job_id, page_size=16))
        items = [{"image_id": p.name, "url": p.as_uri(), "size": 1} for p in sorted(folder.iterdir())]
        assert client.submit_job(items, idempotency_key="arrow-client-files", thumbnail_side=256) == job_id
    assert [t.num_rows for t in tables] == [16, 16, 2]
    table = pa.concat_tables(tables)
    fields = file_fields(signal_names())
    assert table.schema.names[-len(fields):] == [f.name for f in fields]
    assert [table.schema.field(f.name).type for f in fields] == [f.type for f in fields]
    for row in table.to_pylist():
        made = decode_with_facts((folder / row["image_id"]).read_bytes(), 256)
        assert row["thumbnail"] == made.thumbnail
        assert {f.name: row[f.name] for f in fields if f.name != "thumbnail"} == {
            f.name: made.facts.get(f.name) for f in fields if f.name != "thumbnail"
        }
    assert (table["thumbnail"].null_count, table["width"].null_count, table["content_hash"].null_count) == (1, 1, 0)


def test_submit_job_sends_the_thumbnail_side_and_key_only_when_given() -> None:
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(202, json={"job_id": "j"})

    client = client_for(handler)
    items = [{"image_id": "a", "url": "http://x/a.jpg", "size": 1}]
    assert client.submit_job(items, idempotency_key="k") == "j"
    assert client.submit_job(items, thumbnail_side=128) == "j"
    first, second = (json.loads(r.content) for r in requests)
    assert first == {"items": items} and requests[0].headers["idempotency-key"] == "k"
    assert second == {"items": items, "thumbnail_side": 128} and "idempotency-key" not in requests[1].headers


def test_arrow_pages_match_the_json_pages(service: RunningService, job: str) -> None:
    with InferenceClient(service.url, SecretStr(KEY), Settings()) as client:
        tables = list(client.iter_result_tables(job, page_size=8))
        items = [item for page in client.iter_results(job, page_size=8) for item in page]
    assert [t.num_rows for t in tables] == [8, 8, 8, 8, 2]
    table = pa.concat_tables(tables)
    assert table["image_id"].to_pylist() == [i["image_id"] for i in items]
    assert table["error"].to_pylist() == [i["error"] for i in items]
    assert table["error"].null_count == N
    ok = [i for i in items if i["embedding"] is not None]
    vectors = table.filter(pa.compute.is_valid(table["embedding"]))["embedding"].combine_chunks()
    matrix = vectors.flatten().to_numpy().reshape(len(ok), -1)
    np.testing.assert_array_equal(matrix, np.asarray([i["embedding"] for i in ok], dtype=np.float32))
    assert table["time"].to_pylist() == [(i["tags"] or {}).get("time", {}).get("label") for i in items]


def test_unknown_job_and_wrong_key(service: RunningService, job: str) -> None:
    with InferenceClient(service.url, SecretStr(KEY), Settings()) as client:
        with pytest.raises(JobNotFound, match="404: no job 00ff"):
            next(client.iter_result_tables("00ff"))
    with InferenceClient(service.url, SecretStr("wrong"), Settings()) as client:
        with pytest.raises(AuthenticationError, match="rejected the API key"):
            next(client.iter_result_tables(job))


def _page(offset: int, total: int = 5, size: int = 2) -> tuple[bytes, dict[str, str]]:
    ids = range(offset, min(offset + size, total))
    table = from_items([{"image_id": str(i), "embedding": [float(i), 1.0], "error": None} for i in ids])
    headers = {"content-type": ARROW_STREAM, "x-total": str(total)}
    if offset + size < total:
        headers["x-next-offset"] = str(offset + size)
    return to_ipc(table), headers


def test_a_cut_arrow_body_and_a_503_are_retried() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        body, headers = _page(int(request.url.params["offset"]))
        if len(calls) == 1:
            return httpx.Response(503)
        if len(calls) == 2:
            return httpx.Response(200, content=body[: len(body) // 2], headers=headers)
        return httpx.Response(200, content=body, headers=headers)

    tables = list(client_for(handler).iter_result_tables("j", page_size=2))
    assert [t["image_id"].to_pylist() for t in tables] == [["0", "1"], ["2", "3"], ["4"]]
    assert len(calls) == 5 and all(c.headers["accept"].startswith(ARROW_STREAM) for c in calls)
    assert tables[2]["embedding"].to_pylist() == [[4.0, 1.0]]


def test_an_empty_page_before_the_end_is_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": ARROW_STREAM, "x-next-offset": "0"}
        return httpx.Response(200, content=to_ipc(from_items([])), headers=headers)

    with pytest.raises(ServiceError, match="not finished"):
        list(client_for(handler).iter_result_tables("j"))
