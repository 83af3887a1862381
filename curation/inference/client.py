"""The inference service client: one code path for the embedded, a test and a remote service."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
from pydantic import SecretStr
from tenacity import RetryCallState, retry, retry_if_exception, stop_after_delay, wait_exponential

from curation.inference import result_pages
from curation.settings import Settings

TRANSIENT_STATUS = {429, 500, 502, 503, 504}


class ServiceError(RuntimeError):
    """The service refused or failed a request; the message is safe to show."""


class AuthenticationError(ServiceError):
    """The API key was missing or wrong (HTTP 401)."""


class JobNotFound(ServiceError):
    """The service does not know the job (HTTP 404): it restarted without a journal, or it is another service."""


class NoReplicaAvailable(ServiceError):
    """No configured inference replica could take a shard of work."""


class TransientServiceError(ServiceError):
    """A failure worth retrying: connection trouble, 5xx or 429."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    status: str  # Processing | Completed | Failed
    total: int
    done: int
    failed: int
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("Completed", "Failed")


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    backoff = wait_exponential(multiplier=0.5, max=15)(state)
    if isinstance(exc, TransientServiceError) and exc.retry_after is not None:
        return min(max(exc.retry_after, 0.0), 60.0)
    return backoff


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context, made once: building it loads the CA bundle, which is slow to do per client."""
    return httpx.create_ssl_context()


def _result_page(response: httpx.Response) -> tuple[pa.Table, int | None]:
    """A results page (an Arrow stream) and the next offset (None at the end)."""
    try:
        table = result_pages.from_ipc(response.content)
    except (pa.ArrowInvalid, OSError):  # a body cut short or garbled on the way: ask again
        raise TransientServiceError("inference service sent an unreadable results page") from None
    next_offset = response.headers.get("x-next-offset")
    return table, None if next_offset is None else int(next_offset)


def _job_status(body: dict[str, Any]) -> JobStatus:
    return JobStatus(body["job_id"], body["status"], body["total"], body["done"], body["failed"], body.get("reason"))


class InferenceClient:
    """Talks to the inference service. Transient failures are retried with backoff for a bounded time."""

    def __init__(self, base_url: str, api_key: SecretStr, settings: Settings, transport: httpx.BaseTransport | None = None):
        self._budget = settings.transient_budget_s
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key.get_secret_value()}"},
            timeout=settings.request_timeout_s,
            transport=transport,
            verify=_ssl_context(),
        )
        self.base_url = base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        parse: Callable[[httpx.Response], Any] | None = None,
        retrying: bool = True,
        **kwargs: Any,
    ) -> Any:
        """One call under the retry policy (without it: a single attempt); `parse` reads a 2xx response (default:
        its JSON, or None when empty)."""

        def attempt() -> Any:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise TransientServiceError(f"cannot reach the inference service: {type(exc).__name__}") from None
            if response.status_code == 401:
                raise AuthenticationError("the inference service rejected the API key (401): check CURATION_API_KEY")
            if response.status_code in TRANSIENT_STATUS:
                raise TransientServiceError(
                    f"inference service answered {response.status_code}", retry_after=_retry_after(response)
                )
            if response.status_code >= 400:
                detail = response.json().get("detail") if "json" in response.headers.get("content-type", "") else ""
                error = JobNotFound if response.status_code == 404 else ServiceError
                raise error(f"inference service answered {response.status_code}: {detail}")
            if parse is not None:
                return parse(response)
            return response.json() if response.content else None

        if not retrying:
            return attempt()
        policy = retry(
            retry=retry_if_exception(lambda e: isinstance(e, TransientServiceError)),
            wait=_wait,
            stop=stop_after_delay(self._budget),
            reraise=True,
        )
        return policy(attempt)()

    def submit_job(
        self, items: list[dict[str, Any]], idempotency_key: str | None = None, thumbnail_side: int | None = None
    ) -> str:
        """Submit images (image_id, url, size) as one job; resubmitting with the same key returns the same job.

        With thumbnail_side, the job's Arrow result pages also carry each image's file facts, quality signals and
        a thumbnail of that max side (curation.inference.result_pages.file_fields), made on the service's own decode.
        """
        payload: dict[str, Any] = {"items": items}
        if thumbnail_side is not None:
            payload["thumbnail_side"] = thumbnail_side
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        body = self._request("POST", "/v1/jobs", json=payload, headers=headers)
        return str(body["job_id"])

    def job_status(self, job_id: str) -> JobStatus:
        body = self._request("GET", f"/v1/jobs/{job_id}")
        return _job_status(body)

    def wait_for_job(self, job_id: str, wait_s: float) -> JobStatus:
        """A long poll: the job's status as soon as it ends, or after wait_s while it still runs.

        One request, no retries (the tracker's next poll retries); a service without long polls answers at once."""
        timeout = httpx.Timeout(self._http.timeout.read + wait_s if self._http.timeout.read else None)
        body = self._request("GET", f"/v1/jobs/{job_id}", retrying=False, params={"wait_s": wait_s}, timeout=timeout)
        return _job_status(body)

    def iter_results(self, job_id: str, page_size: int = 1000) -> Iterator[list[dict[str, Any]]]:
        """Results in pages, so memory stays bounded whatever the job size."""
        offset: int | None = 0
        while offset is not None:
            body = self._request("GET", f"/v1/jobs/{job_id}/results", params={"offset": offset, "limit": page_size})
            yield body["items"]
            offset = body["next_offset"]
            if not body["items"] and offset is not None:
                raise ServiceError(f"job {job_id} has no results past {offset}; it is not finished")

    def iter_result_tables(self, job_id: str, page_size: int = 1000) -> Iterator[pa.Table]:
        """Results in pages as Arrow tables (curation.inference.result_pages), so neither side touches an embedding's floats.

        The same paging, retries and errors as `iter_results`.
        """
        offset: int | None = 0
        while offset is not None:
            table, offset = self._request(
                "GET",
                f"/v1/jobs/{job_id}/results",
                parse=_result_page,
                params={"offset": offset, "limit": page_size},
                headers={"Accept": result_pages.ARROW_STREAM},
            )
            yield table
            if not table.num_rows and offset is not None:
                raise ServiceError(f"job {job_id} has no results past {offset}; it is not finished")

    def release_job(self, job_id: str) -> None:
        """Let the service forget a finished job whose results are stored; an unknown job is already forgotten."""
        try:
            self._request("DELETE", f"/v1/jobs/{job_id}")
        except JobNotFound:
            pass

    def usage(self) -> dict[str, Any]:
        return self._request("GET", "/v1/usage")

    def model_info(self) -> dict[str, Any]:
        return self._request("GET", "/healthz")

    def check_access(self) -> dict[str, Any]:
        """Raise AuthenticationError now if the key is wrong; returns the model info."""
        self.usage()
        return self.model_info()
