"""The client's retry and error behaviour, against a handler at the HTTP boundary."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from curation.client import AuthenticationError, InferenceClient, ServiceError
from curation.settings import Settings


def client_for(handler, budget: float = 5.0) -> InferenceClient:
    settings = Settings(transient_budget_s=budget, request_timeout_s=2)
    return InferenceClient("http://service", SecretStr("k"), settings, transport=httpx.MockTransport(handler))


STATUS = {"job_id": "j", "status": "Completed", "total": 3, "done": 3, "failed": 0}


def test_retries_503_then_succeeds():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503) if len(calls) <= 2 else httpx.Response(200, json=STATUS)

    assert client_for(handler).job_status("j").status == "Completed"
    assert len(calls) == 3
    assert calls[0].headers["authorization"] == "Bearer k"


def test_429_honours_retry_after(monkeypatch):
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", lambda s: waits.append(s))
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(429, headers={"Retry-After": "3"}) if len(calls) == 1 else httpx.Response(200, json=STATUS)

    assert client_for(handler).job_status("j").done == 3
    assert waits == [3.0]


def test_connection_errors_are_retried_until_the_budget_ends():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ServiceError, match="cannot reach the inference service"):
        client_for(handler, budget=0.5).job_status("j")


def test_401_is_an_authentication_error_without_retry():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(401, json={"detail": "missing or invalid API key"})

    with pytest.raises(AuthenticationError, match="rejected the API key"):
        client_for(handler).job_status("j")
    assert len(calls) == 1


def test_results_are_read_in_pages():
    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(request.url.params["offset"])
        items = [{"image_id": str(i)} for i in range(offset, min(offset + 2, 5))]
        nxt = offset + len(items)
        return httpx.Response(200, json={"items": items, "next_offset": nxt if nxt < 5 else None})

    pages = list(client_for(handler).iter_results("j", page_size=2))
    assert [[i["image_id"] for i in p] for p in pages] == [["0", "1"], ["2", "3"], ["4"]]
