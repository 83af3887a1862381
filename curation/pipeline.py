"""The pipeline's steps as plain functions; tasks/ decorates them and flows/ wires them."""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation import registry, shard_jobs, shard_results
from curation.client import (
    InferenceClient,
    JobNotFound,
    NoReplicaAvailable,
    Replica,
    ServiceError,
    TransientServiceError,
    connect,
    replicas,
)
from curation.ids import image_id_for
from curation.memory import release_free_memory
from curation.parquet_io import write_table
from curation.paths import DatasetPaths, dataset_paths
from curation.registry import Counts, DatasetRecord, DatasetType, Status
from curation.results import WrittenCounts, write_results
from curation.settings import Settings
from curation.shard_jobs import Progress, ShardJob, ShardLost, SubmittedShard, content_hash
from curation.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig, Storage, open_storage, sas_expiry
from curation.taxonomy import DEFAULT_TAXONOMY
from curation.validation import ValidationReport, require_enough, validate_listing

StorageConfig = LocalStorageConfig | AzureStorageConfig
logger = logging.getLogger(__name__)


def list_and_validate(config: StorageConfig, settings: Settings) -> ValidationReport:
    """List the storage and keep acceptable images; raises DatasetTooSmall when there are too few."""
    report = validate_listing(open_storage(config, settings).list_blobs())
    require_enough(report, settings.min_images)
    return report


def register_dataset(
    name: str,
    config: StorageConfig,
    report: ValidationReport,
    settings: Settings,
    dataset_type: DatasetType,
    flow_run_id: str | None = None,
) -> DatasetRecord:
    """Register a Processing dataset; its storage descriptor holds no secret."""
    storage = open_storage(config, settings)
    counts = Counts(found=report.found, accepted=len(report.accepted), rejected=report.rejected)
    record = registry.register(
        settings.data_root, name, type=dataset_type, storage=storage.descriptor(), counts=counts, flow_run_id=flow_run_id
    )
    listing = pa.table(
        {
            "name": [b.name for b in report.accepted],
            "size": [b.size for b in report.accepted],
            "etag": pa.array([b.etag for b in report.accepted], pa.string()),  # curate-new-blobs adopts it as v1
        }
    )
    write_table(dataset_paths(settings.data_root, record.id).listing, listing)
    return record


def resume_dataset(dataset_id: str, config: StorageConfig, settings: Settings) -> tuple[DatasetRecord, list[BlobInfo]]:
    """Reopen an unfinished dataset: its record and registered listing; refuses another storage or a done dataset."""
    record = registry.load(settings.data_root, dataset_id)
    if record.status == Status.COMPLETED:
        raise ValueError(f"dataset {dataset_id} is already Completed; nothing to resume")
    described = open_storage(config, settings).descriptor()
    if any(described.get(k) != record.storage.get(k) for k in ("kind", "container_name", "path", "prefix")):
        raise ValueError(f"dataset {dataset_id} was curated from other storage: {record.storage}")
    paths = dataset_paths(settings.data_root, dataset_id)
    if not paths.listing.exists():
        raise ValueError(f"dataset {dataset_id} has no registered listing to resume from; curate it again")
    listing = pq.read_table(paths.listing).to_pylist()
    record = registry.update(settings.data_root, dataset_id, status=Status.PROCESSING, failure_reason=None)
    return record, [BlobInfo(row["name"], row["size"], row.get("etag")) for row in listing]


def shards(blobs: list[BlobInfo], size: int) -> list[list[BlobInfo]]:
    """Cut work into shards, so orchestration costs per shard, never per image."""
    return [blobs[i : i + size] for i in range(0, len(blobs), size)]


def check_replicas(settings: Settings) -> dict[str, Any]:
    """The model info of the first replica that answers and accepts the API key (a wrong key raises at once);
    NoReplicaAvailable when none answers within the transient budget."""
    down: list[str] = []
    for replica in replicas(settings):
        try:
            with connect(settings, replica) as client:
                return {**client.check_access(), "replica": replica.name}
        except TransientServiceError as exc:
            down.append(f"{replica.name}: {exc}")
    raise NoReplicaAvailable(f"no inference replica answers: {'; '.join(down)}")


def sign_items(config: StorageConfig, settings: Settings, blobs: list[BlobInfo]) -> list[dict[str, Any]]:
    """Job items with a read-only signed URL per blob. The result holds SAS tokens: never persist it."""
    storage = open_storage(config, settings)
    expiry = sas_expiry(settings)
    return [{"image_id": image_id_for(b.name), "url": storage.sign_url(b.name, expiry), "size": b.size} for b in blobs]


def submit_shard(
    config: StorageConfig,
    settings: Settings,
    dataset_id: str,
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
    paths = dataset_paths(settings.data_root, dataset_id)
    content = content_hash(blobs)
    previous = shard_jobs.load_job(paths, shard)
    if previous and previous.content == content and previous.attempt >= attempt and previous.status != shard_jobs.LOST:
        return _submitted(previous, ())
    items = sign_items(config, settings, blobs)
    key = shard_jobs.idempotency_key(dataset_id, shard, content, attempt)
    unreachable: list[str] = []
    for replica in shard_jobs.candidates(replicas(settings), shard, attempt, set(avoid)):
        try:
            with connect(settings, replica) as client:
                job_id = client.submit_job(items, idempotency_key=key, thumbnail_side=settings.thumbnail_size)
        except TransientServiceError as exc:  # down for the whole transient budget: the next replica takes it
            unreachable.append(f"{replica.name}: {exc}")
            continue
        history = [*previous.history, f"{previous.replica} {previous.job_id}: {previous.reason}"] if previous else []
        job = ShardJob(
            shard=shard, replica=replica.name, job_id=job_id, count=len(blobs), content=content, attempt=attempt,
            history=history, names=[b.name for b in blobs], sizes=[b.size for b in blobs],
        )
        return _submitted(shard_jobs.save_job(paths, job), tuple(u.split(": ", 1)[0] for u in unreachable))
    tried = "; ".join(unreachable) or f"every replica was already found down ({', '.join(avoid)})"
    raise NoReplicaAvailable(f"no inference replica can take shard {shard}: {tried}")


def _submitted(job: ShardJob, unreachable: tuple[str, ...]) -> SubmittedShard:
    return SubmittedShard(job.shard, job.replica, job.job_id, job.count, job.attempt, unreachable)


def lost_shard(dataset_id: str, shard: int, settings: Settings) -> tuple[list[BlobInfo], int]:
    """A lost shard's blobs and its next attempt. A shard is tried at most twice per replica plus once (a resumed
    run on a new embedded service loses every job once), so a replica that keeps losing jobs cannot loop forever."""
    job = shard_jobs.load_job(dataset_paths(settings.data_root, dataset_id), shard)
    if job is None or job.status != shard_jobs.LOST:
        raise ValueError(f"shard {shard} of dataset {dataset_id} is not lost")
    if job.attempt >= 2 * len(replicas(settings)):
        raise NoReplicaAvailable(f"shard {shard} was lost {job.attempt + 1} times; last: {job.reason}")
    return job.blobs(), job.attempt + 1


def storage_of(record: DatasetRecord) -> StorageConfig:
    """The storage a dataset was curated from, rebuilt from its descriptor; Azure credentials come from the settings."""
    d = record.storage
    if d.get("kind") == "local":
        return LocalStorageConfig(path=d["path"], prefix=d.get("prefix"))
    keys = ("container_name", "account_name", "account_url", "prefix", "credentials_block", "secret_block")
    return AzureStorageConfig(**{k: d.get(k) for k in keys})


def store_shard_results(config: StorageConfig | None, settings: Settings, dataset_id: str, shard: int) -> int:
    """Store a completed shard job's results: thumbnails, file facts and signals, tags and embeddings; the service
    then forgets the job. A stored shard is not redone; returns the images stored (0 when already stored).

    `config` is only read when the service returns no thumbnails (the shard's images are then decoded here); None
    means the dataset's own storage with credentials from the settings. Raises ShardLost when the job's replica
    cannot answer for it (the shard is marked lost for the tracker to re-submit)."""
    paths = dataset_paths(settings.data_root, dataset_id)
    job = shard_jobs.load_job(paths, shard)
    if job is None or job.status != shard_jobs.COMPLETED:
        raise ValueError(f"shard {shard} of dataset {dataset_id} has no completed job to store")
    replica = {r.name: r for r in replicas(settings)}.get(job.replica)
    if replica is None:
        shard_jobs.lose(paths, job, f"replica {job.replica} is no longer configured")
        raise ShardLost(f"shard {shard}'s replica {job.replica} is no longer configured")

    @functools.cache
    def storage() -> Storage:  # opened only if the service returned no thumbnails, then once per shard
        return open_storage(config or storage_of(registry.load(settings.data_root, dataset_id)), settings)

    def read_bytes(name: str) -> bytes:
        return storage().read_bytes(name)

    local = shard_results.local_thumbnail_rows(read_bytes, paths, settings.thumbnail_size, settings.read_concurrency)
    with connect(settings, replica) as client:
        return shard_results.store_shard(paths, job, client, settings.results_page_size, local)


def settings_for_workers(settings: Settings) -> Settings:
    """The settings a task in another process (a Dask worker) needs to reach this run's replicas: with no service
    configured, the embedded service's loopback URL and key (another process would start its own, which knows no
    job). Travels only as a task parameter, never cached or persisted."""
    if settings.service_urls:
        return settings
    [embedded] = replicas(settings)
    return settings.model_copy(update={"service_url": embedded.url, "api_key": embedded.api_key})


def shards_to_store(dataset_id: str, settings: Settings) -> list[tuple[int, str]]:
    """(shard, job id) of each shard whose job has Completed and whose results are not stored yet."""
    paths = dataset_paths(settings.data_root, dataset_id)
    return [(j.shard, j.job_id) for j in shard_results.unstored(paths, shard_jobs.read_jobs(paths))]


def check_job(dataset_id: str, settings: Settings) -> Progress:
    """Status requests for the unfinished shard jobs; the record's progress and `updated` stamp follow them.

    A replica works through its jobs in the order they came, so each replica's unfinished jobs are asked in that
    order (first attempts by shard, then re-submissions) until one answers it is still Processing: its later jobs
    are not asked this round (they would mostly answer the same), which keeps a round to a few requests instead of
    one per unfinished job (a tracker's rounds then cost O(shards) requests in all, not O(shards^2)). Their progress
    counts wait for the round that asks them.

    A job whose replica does not answer within the transient budget, forgot it (404) or failed it is marked lost,
    for the tracker to re-submit; the other shards on a replica found down are marked lost without a request.
    """
    record = registry.load(settings.data_root, dataset_id)
    paths = dataset_paths(settings.data_root, dataset_id)
    jobs = shard_jobs.read_jobs(paths)
    if not jobs:
        raise RuntimeError(f"dataset {dataset_id} has no inference job yet")
    configured = {r.name: r for r in replicas(settings)}
    down: set[str] = set()
    busy: set[str] = set()  # replicas whose earliest unfinished job is still running this round
    unfinished = [i for i, job in enumerate(jobs) if job.status == shard_jobs.PROCESSING]
    with _Clients(settings) as clients:
        for i in sorted(unfinished, key=lambda i: (jobs[i].attempt, jobs[i].shard)):
            job = jobs[i]
            replica = configured.get(job.replica)
            if replica is None or job.replica in down:
                why = "is no longer configured" if replica is None else "did not answer"
                jobs[i] = shard_jobs.lose(paths, job, f"replica {job.replica} {why}")
                continue
            if job.replica in busy:
                continue
            try:
                status = clients.get(replica).job_status(job.job_id)
            except TransientServiceError as exc:
                down.add(job.replica)
                jobs[i] = shard_jobs.lose(paths, job, f"replica {job.replica}: {exc}")
                continue
            except JobNotFound:
                jobs[i] = shard_jobs.lose(paths, job, f"replica {job.replica} no longer knows job {job.job_id}")
                continue
            if status.status == "Failed":
                jobs[i] = shard_jobs.lose(paths, job, f"job {job.job_id} failed: {status.reason or 'no reason given'}")
                continue
            if status.status == shard_jobs.PROCESSING:
                busy.add(job.replica)
            if (status.status, status.done, status.failed) != (job.status, job.done, job.failed):
                update = {"status": status.status, "done": status.done, "failed": status.failed}
                jobs[i] = shard_jobs.save_job(paths, job.model_copy(update=update))
    progress = shard_jobs.aggregate(jobs, down)
    if record.status == Status.PROCESSING:
        counts = record.counts.model_copy(update={"processed": progress.done - progress.failed, "failed": progress.failed})
        registry.update(settings.data_root, dataset_id, counts=counts)
    return progress


def wait_for_a_shard(dataset_id: str, settings: Settings, timeout_s: float) -> None:
    """Wait up to timeout_s, returning early when the first unfinished shard job ends (a long poll on its replica),
    so the tracker stores each shard as it completes instead of a poll interval later.

    Never raises: an error, or a service that answers at once, waits out the rest of timeout_s; the tracker's next
    poll deals with a replica that is down."""
    deadline = time.monotonic() + timeout_s
    jobs = shard_jobs.read_jobs(dataset_paths(settings.data_root, dataset_id))
    first = next((j for j in jobs if j.status == shard_jobs.PROCESSING), None)
    replica = {r.name: r for r in replicas(settings)}.get(first.replica) if first else None
    if replica is not None:
        try:
            with connect(settings, replica) as client:
                if client.wait_for_job(first.job_id, timeout_s).finished:
                    return
        except ServiceError:
            pass
    time.sleep(max(0.0, deadline - time.monotonic()))


class _Clients:
    """One client per replica, opened when first needed and all closed at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings, self.open = settings, {}

    def get(self, replica: Replica) -> InferenceClient:
        if replica.name not in self.open:
            self.open[replica.name] = connect(self.settings, replica)
        return self.open[replica.name]

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.open.values():
            client.close()


def write_dataset_results(dataset_id: str, settings: Settings, config: StorageConfig | None = None) -> WrittenCounts:
    """Write the results Parquet from every shard's stored results, and record counts and models; the status
    changes in `complete_dataset`. A completed shard not stored yet is stored first (ShardLost when its replica
    cannot answer for it: the shard is then marked lost for the tracker to re-submit)."""
    paths: DatasetPaths = dataset_paths(settings.data_root, dataset_id)
    record = registry.load(settings.data_root, dataset_id)
    jobs = shard_jobs.read_jobs(paths)
    if not jobs:
        raise RuntimeError(f"dataset {dataset_id} has no inference job yet")
    for job in shard_results.unstored(paths, jobs):
        store_shard_results(config, settings, dataset_id, job.shard)
    release_free_memory()  # what inference and storing freed, before the whole-dataset steps
    written = write_results(paths, shard_results.stored_pages(paths), DEFAULT_TAXONOMY)
    info = shard_results.stored_models(paths)
    counts = record.counts.model_copy(update={"processed": written.images - written.failed, "failed": written.failed})
    registry.update(
        settings.data_root,
        dataset_id,
        counts=counts,
        meta_model=info.get("model") or record.meta_model,
        embedding_model=info.get("embedding_model") or record.embedding_model,
    )
    return written


def complete_dataset(dataset_id: str, settings: Settings) -> DatasetRecord:
    """Mark the dataset Completed, or Failed when every image failed (the reason names the first error)."""
    record = registry.load(settings.data_root, dataset_id)
    c = record.counts
    if c.accepted > 0 and c.failed >= c.accepted:
        first = pl.read_parquet(dataset_paths(settings.data_root, dataset_id).files)["error"].drop_nulls()
        error = first[0] if len(first) else "unknown"
        reason = f"all {c.accepted} images failed; first error: {error}{_refused_hint(error)}"
        return registry.mark_failed(settings.data_root, dataset_id, reason)
    return registry.update(settings.data_root, dataset_id, status=Status.COMPLETED, failure_reason=None)


def _refused_hint(error: str) -> str:
    """What an HTTP 401/403 from the storage means for signed URLs, which the bare status does not say."""
    if error.startswith(("HTTP 401", "HTTP 403")):
        return (
            " (the storage refused the signed URL: it expired before the service fetched it, see"
            " CURATION_SAS_EXPIRY_MINUTES, or it lacks read permission)"
        )
    return ""
