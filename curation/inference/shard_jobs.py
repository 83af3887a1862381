"""A dataset's shard -> inference job map: one small JSON file per shard under work/jobs/, written atomically.

Each shard of the listing is one job on one replica. The map lets `track` and `--resume` pick up from a fresh
process, and records which replica holds which job, so a shard lost with its replica is sent to another one.
It holds no secret: replica URLs are stored without credentials and signed URLs are never written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from curation.inference.client import JobNotFound, ServiceError, TransientServiceError
from curation.inference.replicas import Replica, Replicas
from curation.ingest.storage import BlobInfo

if TYPE_CHECKING:
    from curation.dataset.catalog import DatasetStore

PROCESSING, COMPLETED, LOST = "Processing", "Completed", "Lost"


class ShardLost(ServiceError):
    """A shard's job can no longer be read (its replica is down or forgot it): the tracker re-submits the shard."""


class ShardJob(BaseModel):
    """One shard's current job, and what happened to earlier attempts."""

    shard: int
    replica: str  # the replica's URL without credentials
    job_id: str
    count: int
    content: str  # hash of the shard's blob names and sizes
    attempt: int = 0
    status: str = PROCESSING  # Processing | Completed | Lost (to be re-submitted)
    done: int = 0
    failed: int = 0
    reason: str | None = None  # why it was lost
    history: list[str] = Field(default_factory=list)  # "replica job: reason" of earlier attempts
    names: list[str] = Field(default_factory=list)
    sizes: list[int] = Field(default_factory=list)

    def blobs(self) -> list[BlobInfo]:
        return [BlobInfo(n, s) for n, s in zip(self.names, self.sizes, strict=True)]


@dataclass(frozen=True)
class SubmittedShard:
    """What the submit-shard task returns and Prefect persists: ids and counts only."""

    shard: int
    replica: str
    job_id: str
    count: int
    attempt: int
    unreachable: tuple[str, ...] = ()  # replicas found down while submitting


@dataclass(frozen=True)
class Progress:
    """All shard jobs of a dataset, aggregated; `lost` shards wait to be re-submitted by the tracker."""

    total: int
    done: int
    failed: int
    shards: int
    completed: int
    lost: tuple[int, ...] = ()
    down: tuple[str, ...] = ()  # replicas that did not answer within the transient budget this round
    reasons: tuple[str, ...] = field(default=(), repr=False)

    @property
    def status(self) -> str:
        if self.lost:
            return LOST
        return COMPLETED if self.completed == self.shards else PROCESSING

    @property
    def finished(self) -> bool:
        """Nothing left to wait for: every job Completed, or some shard needs the tracker to re-submit it."""
        return self.status != PROCESSING

    @property
    def job_id(self) -> str:
        return f"{self.shards} shard job(s)"


def content_hash(blobs: list[BlobInfo]) -> str:
    """A short hash of a shard's blob names and sizes: the same shard content always gets the same keys."""
    digest = hashlib.sha256()
    for blob in blobs:
        digest.update(f"{blob.name}\0{blob.size}\n".encode())
    return digest.hexdigest()[:16]


def idempotency_key(dataset_id: str, shard: int, content: str, attempt: int) -> str:
    """One key per shard attempt: a retried submit returns the same job, a re-submission makes a new one."""
    return f"{dataset_id}-{shard:05d}-{content}-a{attempt}"


def save_job(store: DatasetStore, job: ShardJob) -> ShardJob:
    store.write_shard_job(job.shard, job.model_dump_json())
    return job


def load_job(store: DatasetStore, shard: int) -> ShardJob | None:
    text = store.read_shard_job(shard)
    return ShardJob.model_validate_json(text) if text is not None else None


def read_jobs(store: DatasetStore) -> list[ShardJob]:
    """Every shard's job, in shard order."""
    return [ShardJob.model_validate_json(text) for text in store.read_shard_jobs()]


def candidates(replicas: list[Replica], shard: int, attempt: int, avoid: set[str]) -> list[Replica]:
    """Replicas to try for a shard, round-robin by shard index (shifted per attempt), skipping those to avoid."""
    n = len(replicas)
    start = (shard + attempt) % n if n else 0
    ordered = replicas[start:] + replicas[:start]
    return [r for r in ordered if r.name not in avoid]


def lose(store: DatasetStore, job: ShardJob, reason: str) -> ShardJob:
    """Mark a shard's job lost (its replica is down or forgot it), so the tracker re-submits the shard."""
    return save_job(store, job.model_copy(update={"status": LOST, "reason": reason}))


def reclaim(replicas: Replicas, job: ShardJob, avoid: set[str]) -> tuple[ShardJob | None, str | None]:
    """Take back a lost shard's job if its replica still has it, before the shard is submitted again.

    A service restarted from its journal finishes the jobs it had (the shard was marked lost while it was down, or
    a failed run is resumed): a new job would process and charge every image twice, and nobody would release the
    old one, whose journal holds signed URLs. Returns (the job as its replica reports it, None); (None, None) when
    there is nothing to take back (the replica is no longer configured, forgot the job, or failed it: a failed job
    is released); (None, replica name) when the replica does not answer, for the caller to avoid it."""
    replica = replicas.get(job.replica)
    if replica is None or job.replica in avoid:
        return None, None
    client = replicas.client(replica)
    try:
        status = client.job_status(job.job_id)
        if status.status in (PROCESSING, COMPLETED) and status.total == job.count:
            update = {"status": status.status, "done": status.done, "failed": status.failed, "reason": None}
            return job.model_copy(update=update), None
        client.release_job(job.job_id)  # failed (or not this shard's): it is superseded by the new job
    except TransientServiceError:
        return None, job.replica
    except (JobNotFound, ServiceError):  # forgotten, or refused: nothing to take back
        pass
    return None, None


def aggregate(jobs: list[ShardJob], down: set[str]) -> Progress:
    return Progress(
        total=sum(j.count for j in jobs),
        done=sum(j.done for j in jobs if j.status != LOST),
        failed=sum(j.failed for j in jobs if j.status != LOST),
        shards=len(jobs),
        completed=sum(j.status == COMPLETED for j in jobs),
        lost=tuple(j.shard for j in jobs if j.status == LOST),
        down=tuple(sorted(down)),
        reasons=tuple(f"shard {j.shard}: {j.reason}" for j in jobs if j.status == LOST),
    )
