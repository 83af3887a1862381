"""The client's retry and error behaviour, against a handler at the HTTP boundary."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from curation.inference.client import AuthenticationError, InferenceClient, JobNotFound, ServiceError
from curation.inference.replicas import Replicas, ServiceNotConfigured
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


def test_404_is_job_not_found():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "no job j"})

    with pytest.raises(JobNotFound, match="404: no job j"):
        client_for(handler).job_status("j")


def test_service_url_lists_name_replicas_without_credentials():
    settings = Settings(service_url=" http://a:1/ ,https://user:pw@b.example/api?code=s3cret", api_key=SecretStr("k"))
    assert settings.service_urls == ["http://a:1", "https://user:pw@b.example/api?code=s3cret"]
    found = list(Replicas(settings))
    assert [r.name for r in found] == ["http://a:1", "https://b.example/api"]
    assert found[1].url == "https://user:pw@b.example/api?code=s3cret"
    assert "pw" not in repr(found[1]) and "s3cret" not in repr(found[1])
    assert Settings(service_url="http://only").service_urls == ["http://only"]
    assert Settings(service_url=None).service_urls == [] and Settings(service_url=" , ").service_urls == []


def test_replicas_need_an_api_key():
    with pytest.raises(ServiceError, match="CURATION_API_KEY"):
        Replicas(Settings(service_url="http://a,http://b", api_key=None))


def test_replicas_never_start_a_service():
    """Building the run's replicas has no side effect: without a URL it says how to get a service."""
    with pytest.raises(ServiceNotConfigured, match="CURATION_SERVICE_URL"):
        Replicas(Settings(service_url=None))


def test_replicas_open_one_client_per_replica_and_pickle_without_them():
    import pickle

    replicas = Replicas(Settings(service_url="http://a,http://b", api_key=SecretStr("k")))
    a, b = list(replicas)
    assert replicas.client(a) is replicas.client(a) is replicas.client()
    assert replicas.client(b) is not replicas.client(a)
    copy = pickle.loads(pickle.dumps(replicas))
    assert [r.name for r in copy] == ["http://a", "http://b"] and copy.client(a) is not replicas.client(a)
    assert replicas.get("http://b") == b and replicas.get("http://gone") is None
    replicas.close()
    copy.close()


def test_clients_share_one_tls_context():
    """The pipeline opens a client per submission and per poll: building httpx's TLS context each time cost ~50 ms."""
    settings = Settings()
    a = InferenceClient("https://a.example", SecretStr("k"), settings)
    b = InferenceClient("https://b.example", SecretStr("k"), settings)
    try:
        context = a._http._transport._pool._ssl_context
        assert context is b._http._transport._pool._ssl_context
        assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname  # still verifies
    finally:
        a.close()
        b.close()
