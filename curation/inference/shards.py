"""A dataset's shards as inference jobs: submit, poll, re-submit when lost, and store each one's results.

Every function takes the run's `Replicas` (curation.inference.replicas): none starts a service or reads settings
from the environment. The tracker (curation.tracking) decides when each is called."""

from __future__ import annotations

import time
from typing import Any

from curation.dataset import shard_store
from curation.dataset.catalog import DatasetStore
from curation.dataset.registry import Status
from curation.inference import shard_jobs
from curation.inference.client import JobNotFound, NoReplicaAvailable, ServiceError, TransientServiceError
from curation.inference.replicas import Replicas
from curation.inference.shard_jobs import Progress, ShardJob, ShardLost, SubmittedShard, content_hash
from curation.ingest.ids import image_id_for
from curation.ingest.storage import BlobInfo, Storage, sas_expiry
from curation.settings import Settings


def shards(blobs: list[BlobInfo], size: int) -> list[list[BlobInfo]]:
    """Cut work into shards, so orchestration costs per shard, never per image."""
    return [blobs[i : i + size] for i in range(0, len(blobs), size)]


def check_replicas(replicas: Replicas) -> dict[str, Any]:
    """The model info of the first replica that answers and accepts the API key (a wrong key raises at once);
    NoReplicaAvailable when none answers within the transient budget."""
    down: list[str] = []
    for replica in replicas:
        try:
            return {**replicas.client(replica).check_access(), "replica": replica.name}
        except TransientServiceError as exc:
            down.append(f"{replica.name}: {exc}")
    raise NoReplicaAvailable(f"no inference replica answers: {'; '.join(down)}")


def sign_items(storage: Storage, settings: Settings, blobs: list[BlobInfo]) -> list[dict[str, Any]]:
    """Job items with a read-only signed URL per blob. The result holds SAS tokens: never persist it."""
    expiry = sas_expiry(settings)
    return [{"image_id": image_id_for(b.name), "url": storage.sign_url(b.name, expiry), "size": b.size} for b in blobs]


def submit_shard(
    storage: Storage,
    replicas: Replicas,
    settings: Settings,
    store: DatasetStore,
    shard: int,
    blobs: list[BlobInfo],
    attempt: int = 0,
    avoid: tuple[str, ...] = (),
) -> SubmittedShard:
    """Sign and submit one shard as its own job, on the next live replica round-robin; returns no secret.

    A shard already submitted with this content at this attempt is not submitted again (a resumed or retried run).
    A replica that does not answer within the client's transient budget is skipped for the next one; when none
    can take the shard, NoReplicaAvailable names each one's reason. The signed URLs never leave this function.
    """
    content = content_hash(blobs)
    previous = shard_jobs.load_job(store, shard)
    if previous and previous.content == content and previous.attempt >= attempt and previous.status != shard_jobs.LOST:
        return _submitted(previous, ())
    if previous and previous.content == content and previous.status == shard_jobs.LOST:
        # Its replica may still have the job (a restarted service finishes it from its journal): take it back
        # rather than process and charge the images twice; a failed one is released there.
        reclaimed, down = shard_jobs.reclaim(replicas, previous, set(avoid))
        if reclaimed is not None:
            return _submitted(shard_jobs.save_job(store, reclaimed), ())
        avoid = (*avoid, down) if down else avoid
    items = sign_items(storage, settings, blobs)
    key = shard_jobs.idempotency_key(store.dataset_id, shard, content, attempt)
    unreachable: list[str] = []
    for replica in shard_jobs.candidates(list(replicas), shard, attempt, set(avoid)):
        try:
            job_id = replicas.client(replica).submit_job(items, idempotency_key=key, thumbnail_side=settings.thumbnail_size)
        except TransientServiceError as exc:  # down for the whole transient budget: the next replica takes it
            unreachable.append(f"{replica.name}: {exc}")
            continue
        history = [*previous.history, f"{previous.replica} {previous.job_id}: {previous.reason}"] if previous else []
        job = ShardJob(
            shard=shard, replica=replica.name, job_id=job_id, count=len(blobs), content=content, attempt=attempt,
            history=history, names=[b.name for b in blobs], sizes=[b.size for b in blobs],
        )
        return _submitted(shard_jobs.save_job(store, job), tuple(u.split(": ", 1)[0] for u in unreachable))
    tried = "; ".join(unreachable) or f"every replica was already found down ({', '.join(avoid)})"
    raise NoReplicaAvailable(f"no inference replica can take shard {shard}: {tried}")


def _submitted(job: ShardJob, unreachable: tuple[str, ...]) -> SubmittedShard:
    return SubmittedShard(job.shard, job.replica, job.job_id, job.count, job.attempt, unreachable)


def lost_shard(replicas: Replicas, store: DatasetStore, shard: int) -> tuple[list[BlobInfo], int]:
    """A lost shard's blobs and its next attempt. A shard is tried at most twice per replica plus once (a resumed
    run on a new embedded service loses every job once), so a replica that keeps losing jobs cannot loop forever."""
    job = shard_jobs.load_job(store, shard)
    if job is None or job.status != shard_jobs.LOST:
        raise ValueError(f"shard {shard} of dataset {store.dataset_id} is not lost")
    if job.attempt >= 2 * len(replicas):
        raise NoReplicaAvailable(f"shard {shard} was lost {job.attempt + 1} times; last: {job.reason}")
    return job.blobs(), job.attempt + 1


def resubmit_lost(
    storage: Storage, replicas: Replicas, settings: Settings, store: DatasetStore, shard: int, avoid: tuple[str, ...]
) -> SubmittedShard:
    """Re-submit a lost shard at its next attempt, avoiding the replicas found down."""
    blobs, attempt = lost_shard(replicas, store, shard)
    return submit_shard(storage, replicas, settings, store, shard, blobs, attempt, avoid)


def store_shard_results(replicas: Replicas, settings: Settings, store: DatasetStore, shard: int) -> int:
    """Store a completed shard job's results: thumbnails, file facts and signals, tags and embeddings; the service
    then forgets the job. A stored shard is not redone; returns the images stored (0 when already stored).

    Raises ShardLost when the job's replica cannot answer for it (the shard is marked lost for the tracker to
    re-submit)."""
    job = shard_jobs.load_job(store, shard)
    if job is None or job.status != shard_jobs.COMPLETED:
        raise ValueError(f"shard {shard} of dataset {store.dataset_id} has no completed job to store")
    replica = replicas.get(job.replica)
    if replica is None:
        shard_jobs.lose(store, job, f"replica {job.replica} is no longer configured")
        raise ShardLost(f"shard {shard}'s replica {job.replica} is no longer configured")
    return shard_store.store_shard(store, job, replicas.client(replica), settings.results_page_size)


def shards_to_store(store: DatasetStore) -> list[tuple[int, str]]:
    """(shard, job id) of each shard whose job has Completed and whose results are not stored yet."""
    return [(j.shard, j.job_id) for j in shard_store.unstored(store, shard_jobs.read_jobs(store))]


def check_job(replicas: Replicas, store: DatasetStore) -> Progress:
    """Status requests for the unfinished shard jobs; the record's progress and `updated` stamp follow them.

    A replica works through its jobs in the order they came, so each replica's unfinished jobs are asked in that
    order (first attempts by shard, then re-submissions) until one answers it is still Processing: its later jobs
    wait for a later round, which keeps a round to a few requests instead of one per unfinished job.

    A job whose replica does not answer within the transient budget, forgot it (404) or failed it is marked lost,
    for the tracker to re-submit; the other shards on a replica found down are marked lost without a request.
    """
    record = store.load_record()
    jobs = shard_jobs.read_jobs(store)
    if not jobs:
        raise RuntimeError(f"dataset {store.dataset_id} has no inference job yet")
    down: set[str] = set()
    busy: set[str] = set()  # replicas whose earliest unfinished job is still running this round
    unfinished = [i for i, job in enumerate(jobs) if job.status == shard_jobs.PROCESSING]
    for i in sorted(unfinished, key=lambda i: (jobs[i].attempt, jobs[i].shard)):
        job = jobs[i]
        replica = replicas.get(job.replica)
        if replica is None or job.replica in down:
            why = "is no longer configured" if replica is None else "did not answer"
            jobs[i] = shard_jobs.lose(store, job, f"replica {job.replica} {why}")
            continue
        if job.replica in busy:
            continue
        try:
            status = replicas.client(replica).job_status(job.job_id)
        except TransientServiceError as exc:
            down.add(job.replica)
            jobs[i] = shard_jobs.lose(store, job, f"replica {job.replica}: {exc}")
            continue
        except JobNotFound:
            jobs[i] = shard_jobs.lose(store, job, f"replica {job.replica} no longer knows job {job.job_id}")
            continue
        if status.status == "Failed":
            jobs[i] = shard_jobs.lose(store, job, f"job {job.job_id} failed: {status.reason or 'no reason given'}")
            continue
        if status.status == shard_jobs.PROCESSING:
            busy.add(job.replica)
        if (status.status, status.done, status.failed) != (job.status, job.done, job.failed):
            update = {"status": status.status, "done": status.done, "failed": status.failed}
            jobs[i] = shard_jobs.save_job(store, job.model_copy(update=update))
    progress = shard_jobs.aggregate(jobs, down)
    if record.status == Status.PROCESSING:
        counts = record.counts.model_copy(update={"processed": progress.done - progress.failed, "failed": progress.failed})
        store.update_record(counts=counts)
    return progress


def wait_for_a_shard(replicas: Replicas, store: DatasetStore, timeout_s: float) -> None:
    """Wait up to timeout_s, returning early when the first unfinished shard job ends (a long poll on its replica),
    so the tracker stores each shard as it completes instead of a poll interval later.

    Never raises: an error, or a service that answers at once, waits out the rest of timeout_s; the tracker's next
    poll deals with a replica that is down."""
    deadline = time.monotonic() + timeout_s
    jobs = shard_jobs.read_jobs(store)
    first = next((j for j in jobs if j.status == shard_jobs.PROCESSING), None)
    replica = replicas.get(first.replica) if first else None
    if replica is not None:
        try:
            if replicas.client(replica).wait_for_job(first.job_id, timeout_s).finished:
                return
        except ServiceError:
            pass
    time.sleep(max(0.0, deadline - time.monotonic()))
