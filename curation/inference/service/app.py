"""The inference service: a FastAPI app with Bearer API-key auth, jobs, paged results and usage."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field, ValidationError

from curation.inference import result_pages
from curation.inference.models.base import ModelBackend
from curation.inference.service.jobs import IdempotencyConflict, JobItem, JobRunner, QueueFull
from curation.inference.service.usage import UsageLedger, key_id
from curation.settings import Settings
from curation.taxonomy import DEFAULT_TAXONOMY
from curation.inference.thumbnails import signal_names

MAX_PAGE = 5000
MAX_WAIT_S = 60.0  # longest long poll of a job's status


class SubmitItem(BaseModel):
    image_id: str
    url: str
    size: int = 0


class SubmitRequest(BaseModel):
    items: list[SubmitItem] = Field(max_length=2_000_000)
    models: list[str] = Field(default_factory=lambda: ["meta", "embedding"])
    # With it, each result also carries the image's file facts, quality signals and a thumbnail of this max side
    # (Arrow pages only), made on the decode the model needs anyway. None: tags and embeddings only.
    thumbnail_side: int | None = Field(default=None, ge=16, le=2048)


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, read as it arrives and refused (413) as soon as it passes `limit` bytes: its declared
    Content-Length up front, then what actually came, so one request's memory stays bounded."""
    too_large = HTTPException(
        status_code=413,  # content too large
        detail=f"request body larger than {limit} bytes (the service's CURATION_SERVICE_MAX_BODY_BYTES): "
        "submit smaller jobs",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body, size = bytearray(), 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        body += chunk
    return bytes(body)


def parse_submission(body: bytes, max_items: int) -> SubmitRequest:
    """A job submission's body, validated: 422 for a malformed one (the errors without their input, which may
    hold signed URLs), 413 for more items than a job may hold."""
    try:
        request = SubmitRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        raise HTTPException(status_code=422, detail=errors) from None
    if len(request.items) > max_items:
        raise HTTPException(
            status_code=413,  # content too large
            detail=f"a job may hold at most {max_items} items (the service's CURATION_SERVICE_MAX_JOB_ITEMS); "
            f"this one has {len(request.items)}: submit smaller jobs",
        )
    return request


SUBMIT_SCHEMA = SubmitRequest.model_json_schema()  # the OpenAPI page still documents the body it reads itself


def _accepted_keys(settings: Settings, extra: list[str]) -> list[str]:
    keys = list(extra)
    if settings.service_api_keys is not None:
        keys += [k.strip() for k in settings.service_api_keys.get_secret_value().split(",") if k.strip()]
    if not keys:
        raise RuntimeError("the inference service needs at least one API key: set CURATION_SERVICE_API_KEYS")
    return keys


def caller(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """The caller's key id; 401 for a missing or wrong key (compared in constant time)."""
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode()
    keys: list[bytes] = request.app.state.api_keys
    # Compare with every key, without stopping early, so timing does not tell which key nearly matched.
    matches = [hmac.compare_digest(given, k) for k in keys]
    if scheme.lower() != "bearer" or not any(matches):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key_id(token.strip())


Caller = Annotated[str, Depends(caller)]


def wants_arrow(accept: str | None) -> bool:
    """Whether an Accept header names the Arrow stream type (with a non-zero q); anything else gets JSON."""
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if media.lower() == result_pages.ARROW_STREAM:
            q = next((p.partition("=")[2] for p in params if p.lower().startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


def create_app(settings: Settings, backend: ModelBackend, api_keys: list[str] | None = None) -> FastAPI:
    """Build the service. Fails fast when no API key is configured."""
    keys = [k.encode() for k in _accepted_keys(settings, api_keys or [])]
    usage = UsageLedger(settings.usage_path)
    runner = JobRunner(backend, settings, usage)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        runner.close()

    app = FastAPI(title="curation inference service", version="1", lifespan=lifespan)
    app.state.runner = runner
    app.state.api_keys = keys


    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok", "model": backend.name, "embedding_model": backend.embedding_name}

    @app.post(
        "/v1/jobs",
        status_code=status.HTTP_202_ACCEPTED,
        openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": SUBMIT_SCHEMA}}}},
    )
    async def submit_job(
        request: Request, owner: Caller, idempotency_key: Annotated[str | None, Header()] = None
    ) -> dict[str, object]:
        """Queue a job. The body is read only once the key is accepted (no body parameter: FastAPI would read and
        parse it before checking the key), incrementally and up to CURATION_SERVICE_MAX_BODY_BYTES."""
        raw = await read_body(request, settings.service_max_body_bytes)
        body = parse_submission(raw, settings.service_max_job_items)
        items = [JobItem(i.image_id, i.url, i.size) for i in body.items]
        try:
            job = await run_in_threadpool(
                runner.submit, owner, items, idempotency_key, thumbnail_side=body.thumbnail_side, models=body.models
            )
        except IdempotencyConflict as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except QueueFull as exc:
            raise HTTPException(
                status_code=status.HTTP_429_TOO_MANY_REQUESTS, detail=str(exc),
                headers={"Retry-After": str(exc.retry_after_s)},
            ) from None
        return job.status_json()

    @app.get("/v1/jobs/{job_id}")
    def job_status(
        job_id: str,
        owner: Caller,
        wait_s: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="long poll: answer when the job ends, or after this")] = 0.0,
    ) -> dict[str, object]:
        job = runner.wait(owner, job_id, wait_s)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return job.status_json()

    categories = getattr(backend, "taxonomy", DEFAULT_TAXONOMY).categories
    dim = int(getattr(backend, "embedding_dim", 1))

    @app.get(
        "/v1/jobs/{job_id}/results",
        response_model=None,
        responses={200: {"content": {result_pages.ARROW_STREAM: {}}, "description": "a page (JSON or Arrow)"}},
    )
    def job_results(
        job_id: str,
        owner: Caller,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
        accept: Annotated[str | None, Header()] = None,
    ) -> dict[str, object] | Response:
        """A page of results: JSON by default, an Arrow IPC stream when the Accept header asks for one."""
        job = runner.get(owner, job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        page = job.results[offset : offset + limit]
        end = offset + len(page)
        next_offset = end if end < len(job.items) else None
        if wants_arrow(accept):
            headers = {"X-Total": str(len(job.items)), "Vary": "Accept"}
            if next_offset is not None:
                headers["X-Next-Offset"] = str(next_offset)
            signals = None if job.thumbnail_side is None else signal_names()
            table = result_pages.from_results(page, categories, dim, signals)
            return Response(result_pages.to_ipc(table), media_type=result_pages.ARROW_STREAM, headers=headers)
        return {
            "job_id": job_id,
            "total": len(job.items),
            "offset": offset,
            "next_offset": next_offset,
            "items": [r.as_json() for r in page],
        }

    @app.delete("/v1/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
    def release_job(job_id: str, owner: Caller) -> None:
        """Forget a job: a finished one once its results are stored, a running one (superseded by a re-submission)
        with its queued batches cancelled."""
        if runner.release(owner, job_id) is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")

    @app.get("/v1/usage")
    def read_usage(owner: Caller) -> dict[str, object]:
        return {"key_id": owner, "rows": usage.rows(owner)}

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # Never echo request data (it may hold signed URLs) in an error.
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    return app
