"""Inference jobs: fetch each image, run the model in batches, keep per-image results.

A job with a `thumbnail_side` also gets each image's file facts, quality signals and thumbnail (JPEG bytes), made on
the decode the model needs anyway (curation.inference.thumbnails.decode_with_facts), so a client need not read the pixels.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from PIL import Image

from curation.inference import workpool
from curation.inference.imaging import ImageDecodeError, at_min_side, decode_image
from curation.inference.models.base import ModelBackend, Prediction
from curation.inference.service.fetch import FetchError, fetch_bytes
from curation.inference.service.journal import JobJournal
from curation.inference.service.usage import UsageLedger
from curation.settings import Settings
from curation.analysis.quality import WORK_SIDE
from curation.inference.thumbnails import decode_with_facts

BATCH_SIZE = 16
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
    status: str = "Processing"
    reason: str | None = None
    results: list[ImageResult] = field(default_factory=list)
    failed: int = 0
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)  # set when it ends

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
        if len(job.results) == len(job.items):
            self._finish(job)
        for start in range(0, len(items), BATCH_SIZE):
            self._pool.submit(self._run_batch, job, items[start : start + BATCH_SIZE])

    def submit(
        self, owner: str, items: list[JobItem], idempotency_key: str | None, thumbnail_side: int | None = None
    ) -> Job:
        """Create a job, or return the one this owner already made with the same idempotency key.

        With thumbnail_side, each result also carries the image's file facts, quality signals and thumbnail."""
        with self._lock:
            self._sweep()
            if idempotency_key:
                for job in self.jobs.values():
                    if job.owner == owner and job.idempotency_key == idempotency_key:
                        return job
            job = Job(
                id=uuid.uuid4().hex,
                owner=owner,
                items=items,
                model=self.backend.name,
                embedding_model=self.backend.embedding_name,
                idempotency_key=idempotency_key,
                thumbnail_side=thumbnail_side,
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
        """Forget a finished job and its results (the client wrote them): True; False while it still runs; None if
        unknown. A long-lived service would otherwise keep every result it ever made."""
        with self._lock:
            job = self.get(owner, job_id)
            if job is None:
                return None
            if job.status == "Processing":
                return False
            del self.jobs[job_id]
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
            )
        except FetchError as exc:
            return str(exc)
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
        self.journal.record_results(job.id, results)
        self.usage.record(job.owner, self.backend.name, processed=len(results) - failed, failed=failed)
        with self._lock:
            job.results.extend(results)
            job.failed += failed
            job.updated = datetime.now(UTC)
            if len(job.results) == len(job.items):
                self._finish(job)

    def _finish(self, job: Job) -> None:
        job.status = "Completed"
        job.updated = datetime.now(UTC)
        job.ended.set()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._fetchers.shutdown(wait=False, cancel_futures=True)
        self._http.close()
