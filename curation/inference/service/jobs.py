"""Inference jobs: fetch each image, run the model in batches, keep per-image results.

A job with a `thumbnail_side` also gets each image's file facts, quality signals and thumbnail (JPEG bytes), made on
the decode the model needs anyway (curation.inference.thumbnails.decode_with_facts), so a client need not read the pixels.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from PIL import Image

from curation.inference import workpool
from curation.inference.result_pages import RETRYABLE
from curation.inference.imaging import ImageDecodeError, at_min_side, decode_image
from curation.inference.models.base import ModelBackend, Prediction
from curation.inference.service.fetch import FetchError, fetch_bytes
from curation.inference.service.journal import JobJournal
from curation.inference.service.usage import UsageLedger
from curation.secrets import strip_query
from curation.settings import Settings
from curation.analysis.quality import WORK_SIDE
from curation.inference.thumbnails import decode_with_facts

BATCH_SIZE = 16
RETRY_AFTER_S = 30  # what a 429 for a key with too much work queued tells the client to wait
MODEL_SIDE = 256  # default short side a backend needs; a backend may declare less with `input_side`



@dataclass(frozen=True)
class LocalFile:
    """A file:// image that the worker process reads itself (the embedded service, which alone may read files): its
    bytes need not be read here and copied to the worker."""

    url: str
    max_bytes: int

    def read(self) -> bytes | str:
        """The bytes, or why they could not be read (as the service's own fetch words it)."""
        try:
            return fetch_bytes(self.url, None, max_bytes=self.max_bytes, max_redirects=0, allow_file=True,
                               allow_private=False)
        except FetchError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - never lose an image; the type only (a message may hold the URL)
            return f"cannot fetch: {type(exc).__name__}"


# One image's work for predict_batch: (backend, bytes or a file to read, the model's input side, the thumbnail side
# or None).
Work = tuple[ModelBackend, "bytes | LocalFile", int, int | None]
# And its outcome: (prediction, error, file facts, thumbnail JPEG); facts and thumbnail only with a thumbnail side.
Outcome = tuple[Prediction | None, str | None, dict[str, object] | None, bytes | None]


@dataclass(frozen=True)
class JobItem:
    image_id: str
    url: str
    size: int = 0


@dataclass
class ImageResult:
    image_id: str
    tags: dict[str, tuple[str | None, float]] | None
    embedding: np.ndarray | None
    error: str | None
    facts: dict[str, object] | None = None  # with a thumbnail side: curation.inference.thumbnails.decode_with_facts's facts
    thumbnail: bytes | None = None  # JPEG; travels only in Arrow pages, never in JSON

    def as_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "tags": None if self.tags is None else {c: {"label": l, "confidence": p} for c, (l, p) in self.tags.items()},
            "embedding": None if self.embedding is None else self.embedding.tolist(),
            "error": self.error,
        }


@dataclass
class Job:
    id: str
    owner: str
    items: list[JobItem]
    model: str
    embedding_model: str
    idempotency_key: str | None = None
    thumbnail_side: int | None = None
    request_hash: str | None = None  # request_hash() of what made it; None in journals written before it existed
    status: str = "Processing"
    reason: str | None = None
    results: list[ImageResult] = field(default_factory=list)
    failed: int = 0
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)  # set when it ends
    cancelled: bool = False  # released while it ran: its queued batches are dropped, a running one's results too

    def status_json(self) -> dict[str, Any]:
        done = len(self.results)
        return {
            "job_id": self.id,
            "status": self.status,
            "reason": self.reason,
            "total": len(self.items),
            "done": done,
            "failed": self.failed,
            "progress": done / len(self.items) if self.items else 1.0,
            "model": self.model,
            "embedding_model": self.embedding_model,
            "thumbnail_side": self.thumbnail_side,
            "created": self.created.isoformat(),
            "updated": self.updated.isoformat(),
        }


def _decode(
    data: bytes, side: int, thumbnail_side: int | None
) -> tuple[Image.Image | str, dict[str, object] | None, bytes | None]:
    """The model's input (or the decode error), and with a thumbnail side the file facts and thumbnail too.

    One decode when the model needs no more pixels than the thumbnail (its input is box-reduced from the thumbnail's
    decode, as a draft decode at its side would be); otherwise a second decode at the model's side."""
    if thumbnail_side is None:
        try:
            return decode_image(data, min_side=side).image, None, None
        except ImageDecodeError as exc:
            return str(exc), None, None
    made = decode_with_facts(data, thumbnail_side)
    if made.decoded is None:
        return str(made.facts["error"]), made.facts, None
    if side <= max(thumbnail_side, WORK_SIDE):  # the side decode_with_facts decoded at
        return at_min_side(made.decoded, side), made.facts, made.thumbnail
    try:
        return decode_image(data, min_side=side).image, made.facts, made.thumbnail
    except ImageDecodeError as exc:  # pragma: no cover - the same bytes decoded a moment ago
        return str(exc), made.facts, made.thumbnail


def predict_batch(work: list[Work]) -> list[Outcome]:
    """Decode each image (JPEG draft mode at the backend's input side) and run the model on the batch.

    Runs in a worker process (curation.inference.workpool) or in the calling thread. Returns (prediction, None, facts,
    thumbnail) per image, or (None, why, facts, thumbnail): a decode error fails that image (its facts say why, it
    has no thumbnail), a model crash fails the batch's images, not the job, and keeps their facts and thumbnails.
    Facts and thumbnail are None for a job without a thumbnail side.
    """
    if not work:
        return []
    backend = work[0][0]
    datas = [data.read() if isinstance(data, LocalFile) else data for _, data, _, _ in work]
    decoded = [
        (data, None, None) if isinstance(data, str) else _decode(data, side, thumbnail_side)  # str: unreadable
        for data, (_, _, side, thumbnail_side) in zip(datas, work, strict=True)
    ]
    images = [d[0] for d in decoded if not isinstance(d[0], str)]
    try:
        predictions = iter(backend.predict(images)) if images else iter(())
        model_error = None
    except Exception as exc:  # a model crash fails these images, not the job
        predictions, model_error = iter(()), f"model error: {type(exc).__name__}: {exc}"
    out: list[Outcome] = []
    for image, facts, thumbnail in decoded:
        if isinstance(image, str):
            out.append((None, image, facts, None))
        elif model_error is not None:
            out.append((None, model_error, facts, thumbnail))
        else:
            out.append((next(predictions), None, facts, thumbnail))
    return out


class IdempotencyConflict(ValueError):
    """An Idempotency-Key reused with another request: answering with the old job would silently drop the new one."""


class QueueFull(RuntimeError):
    """The API key already has as many images queued or running as the service allows it."""

    retry_after_s = RETRY_AFTER_S


def request_hash(items: list[JobItem], thumbnail_side: int | None, models: list[str]) -> str:
    """What identifies a job request for its idempotency key: its items, thumbnail side and models.

    URLs count without their query: a re-signed URL (a new SAS for the same blob) is the same request."""
    digest = hashlib.sha256(json.dumps([thumbnail_side, list(models)]).encode())
    for item in items:
        digest.update(f"{item.image_id}\0{strip_query(item.url)}\0{item.size}\n".encode())
    return digest.hexdigest()


def _worker_died(work: Work, reason: str) -> Outcome:
    error = f"model error: {reason}"
    if work[3] is None:
        return None, error, None, None
    # What is known without decoding again (the decode may be what killed the worker): the bytes' hash.
    data = work[1].read() if isinstance(work[1], LocalFile) else work[1]
    data = b"" if isinstance(data, str) else data
    facts = {"content_hash": hashlib.sha256(data).hexdigest() if data else None, "width": None, "height": None,
             "format": None, "error": error}
    return None, error, facts, None


class JobRunner:
    """Owns the jobs of one service instance and the worker threads that process them."""

    def __init__(self, backend: ModelBackend, settings: Settings, usage: UsageLedger) -> None:
        self.backend = backend
        self.settings = settings
        self.usage = usage
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        # A backend that says it is cheap to copy and pure CPU (the default one) runs in curation.inference.workpool's
        # processes; the batch threads then only fetch and wait, so a few more of them keep the processes fed.
        self._in_workers = bool(getattr(backend, "process_safe", False)) and workpool.worker_count(settings) > 0
        threads = settings.service_workers + (workpool.worker_count(settings) if self._in_workers else 0)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inference")
        self._fetchers = ThreadPoolExecutor(max_workers=4 * settings.service_workers, thread_name_prefix="fetch")
        self._http = httpx.Client(
            timeout=settings.fetch_timeout_s,
            limits=httpx.Limits(max_connections=4 * settings.service_workers),
        )
        # Fair scheduling: each owner's batches wait in its own queue and the pool's threads take them round-robin
        # between owners (one pool task per batch, each running whichever batch is next), so one key's big job
        # cannot hold back another key's small one. _pending counts each owner's images queued or running.
        self._batches: dict[str, deque[tuple[Job, list[JobItem]]]] = {}
        self._turns: deque[str] = deque()  # owners with queued batches, next first
        self._pending: Counter[str] = Counter()
        self.journal = JobJournal(settings.service_state_dir)
        self._resume_journalled_jobs()

    def _resume_journalled_jobs(self) -> None:
        """After a restart: reload every journalled job and queue the images that have no result yet."""
        for meta, items, results in self.journal.load():
            job = Job(
                id=meta["id"],
                owner=meta["owner"],
                items=[JobItem(**i) for i in items],
                model=meta["model"],
                embedding_model=meta["embedding_model"],
                idempotency_key=meta["idempotency_key"],
                thumbnail_side=meta.get("thumbnail_side"),  # absent in journals written before it existed
                request_hash=meta.get("request_hash"),  # likewise
                created=meta["created"],
            )
            for row in results:
                tags = None if row["tags"] is None else {c: tuple(v) for c, v in row["tags"].items()}
                job.results.append(
                    ImageResult(row["image_id"], tags, row["embedding"], row["error"], row["facts"], row["thumbnail"])
                )
            job.failed = sum(r.error is not None for r in job.results)
            self.jobs[job.id] = job
            done = {r.image_id for r in job.results}
            self._queue(job, [i for i in job.items if i.image_id not in done])

    def _queue(self, job: Job, items: list[JobItem]) -> None:
        """Queue a job's items in batches behind its owner's other work (a submission, or a restart's resume)."""
        if len(job.results) == len(job.items):
            self.journal.end(job)
            self._finish(job)
        batches = [items[start : start + BATCH_SIZE] for start in range(0, len(items), BATCH_SIZE)]
        if not batches:
            return
        with self._lock:
            if job.owner not in self._batches:
                self._turns.append(job.owner)
            self._batches.setdefault(job.owner, deque()).extend((job, batch) for batch in batches)
            self._pending[job.owner] += len(items)
        for _ in batches:
            self._pool.submit(self._run_next)

    def _run_next(self) -> None:
        """Run the next batch, taking owners in turn; nothing when its batch was cancelled (a released job)."""
        with self._lock:
            if not self._turns:
                return
            owner = self._turns.popleft()
            queue = self._batches[owner]
            job, items = queue.popleft()
            if queue:
                self._turns.append(owner)
            else:
                del self._batches[owner]
        try:
            self._run_batch(job, items)
        finally:
            with self._lock:
                self._pending[owner] -= len(items)

    def _cancel_queued(self, job: Job) -> None:
        """Drop a job's queued batches (the lock held)."""
        queue = self._batches.get(job.owner)
        if queue is None:
            return
        kept = deque(b for b in queue if b[0] is not job)
        self._pending[job.owner] -= sum(len(items) for j, items in queue if j is job)
        if kept:
            self._batches[job.owner] = kept
        else:
            del self._batches[job.owner]
            self._turns.remove(job.owner)

    def submit(
        self,
        owner: str,
        items: list[JobItem],
        idempotency_key: str | None,
        thumbnail_side: int | None = None,
        models: list[str] | None = None,
    ) -> Job:
        """Create a job, or return the one this owner already made with the same idempotency key and request.

        With thumbnail_side, each result also carries the image's file facts, quality signals and thumbnail.
        Raises IdempotencyConflict when the key was used for another request, QueueFull when the owner already
        has service_max_queued_images_per_key images queued or running."""
        identity = request_hash(items, thumbnail_side, models or [])
        with self._lock:
            self._sweep()
            if idempotency_key:
                for job in self.jobs.values():
                    if job.owner == owner and job.idempotency_key == idempotency_key:
                        if job.request_hash is not None and job.request_hash != identity:
                            raise IdempotencyConflict(
                                f"Idempotency-Key {idempotency_key!r} was already used for job {job.id} with a "
                                "different request (items, thumbnail_side or models); send a new key for a new request"
                            )
                        return job
            limit = self.settings.service_max_queued_images_per_key
            if self._pending[owner] + len(items) > limit:
                raise QueueFull(
                    f"this API key has {self._pending[owner]} images queued or running; {len(items)} more would pass "
                    f"the service's limit of {limit} (CURATION_SERVICE_MAX_QUEUED_IMAGES_PER_KEY): retry later"
                )
            job = Job(
                id=uuid.uuid4().hex,
                owner=owner,
                items=items,
                model=self.backend.name,
                embedding_model=self.backend.embedding_name,
                idempotency_key=idempotency_key,
                thumbnail_side=thumbnail_side,
                request_hash=identity,
            )
            self.jobs[job.id] = job
            self.journal.record_job(job)
        self._queue(job, items)
        return job

    def get(self, owner: str, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        return job if job is not None and job.owner == owner else None

    def wait(self, owner: str, job_id: str, timeout_s: float) -> Job | None:
        """The job once it has ended, or after timeout_s while it still runs (a long poll); None if unknown."""
        job = self.get(owner, job_id)
        if job is not None and timeout_s > 0:
            job.ended.wait(timeout_s)
        return job

    def release(self, owner: str, job_id: str) -> bool | None:
        """Forget a job, its results and its journal: True; None if unknown. A finished job is released once the
        client stored its results (a long-lived service would otherwise keep every result it ever made); a running
        one when a re-submission superseded it: its queued batches are cancelled, so its images are not processed
        (nor charged) twice."""
        with self._lock:
            job = self.get(owner, job_id)
            if job is None:
                return None
            del self.jobs[job_id]
            if job.status == "Processing":
                job.cancelled = True
                job.status, job.reason = "Cancelled", "released while it ran"
                self._cancel_queued(job)
                job.ended.set()
        self.journal.forget(job_id)
        return True

    def _sweep(self) -> None:
        """Forget finished jobs nobody released within the retention time (a client that died, say)."""
        cutoff = datetime.now(UTC).timestamp() - self.settings.service_job_retention_s
        stale = [j.id for j in list(self.jobs.values()) if j.status != "Processing" and j.updated.timestamp() < cutoff]
        for job_id in stale:
            self.jobs.pop(job_id, None)
            self.journal.forget(job_id)

    def _source(self, item: JobItem) -> bytes | LocalFile | str:
        """What a worker needs to decode the image: a local file for it to read itself (embedded service, worker
        processes), else the bytes fetched here; or why they could not be fetched."""
        if self._in_workers and self.settings.allow_file_urls and item.url.startswith("file:"):
            return LocalFile(item.url, self.settings.max_image_bytes)
        return self._fetch(item)

    def _fetch(self, item: JobItem) -> bytes | str:
        """The image's bytes, or why they could not be fetched."""
        try:
            return fetch_bytes(
                item.url,
                self._http,
                max_bytes=self.settings.max_image_bytes,
                max_redirects=self.settings.max_redirects,
                allow_file=self.settings.allow_file_urls,
                allow_private=self.settings.allow_private_hosts,
                retry_budget_s=self.settings.fetch_retry_budget_s,
            )
        except FetchError as exc:  # still failing after the retries: a transient cause is marked retryable
            return f"{RETRYABLE}{exc}" if exc.transient else str(exc)
        except Exception as exc:  # noqa: BLE001 - never lose an image; the type only (a message may hold the URL)
            return f"cannot fetch: {type(exc).__name__}"

    def _run_batch(self, job: Job, items: list[JobItem]) -> None:
        fetched = list(self._fetchers.map(self._source, items))  # concurrent fetches; the CPU work follows
        side = getattr(self.backend, "input_side", MODEL_SIDE)  # JPEG draft decodes no larger than needed
        work = [(self.backend, data, side, job.thumbnail_side) for data in fetched if not isinstance(data, str)]
        if self._in_workers:
            outcomes = iter(workpool.run_batch(predict_batch, work, _worker_died, settings=self.settings))
        else:
            outcomes = iter(predict_batch(work))
        results = []
        for item, data in zip(items, fetched, strict=True):
            pred, error, facts, thumbnail = (None, data, None, None) if isinstance(data, str) else next(outcomes)
            if pred is None:
                results.append(ImageResult(item.image_id, None, None, error, facts, thumbnail))
            else:
                results.append(ImageResult(item.image_id, pred.tags, pred.embedding, None, facts, thumbnail))
        failed = sum(r.error is not None for r in results)
        if job.cancelled:  # released while this batch ran: nobody reads these results, nobody is charged
            return
        self.journal.record_results(job.id, results)
        self.usage.record(job.owner, self.backend.name, processed=len(results) - failed, failed=failed)
        with self._lock:
            job.results.extend(results)
            job.failed += failed
            job.updated = datetime.now(UTC)
            ended = len(job.results) == len(job.items)
        if ended:  # its signed URLs are no longer needed: the journal drops them before the job reads as ended
            self.journal.end(job)
            with self._lock:
                self._finish(job)

    def _finish(self, job: Job) -> None:
        job.status = "Completed"
        job.updated = datetime.now(UTC)
        job.ended.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self._http.close()
