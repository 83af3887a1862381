"""Tasks of the curate-dataset and track-curation flows: thin wrappers over curation.ingest, curation.inference.shards
and curation.dataset.finish. Each takes the run's settings or its `Run` as a parameter: nothing is read at import."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from curation.dataset.catalog import Catalog, DatasetStore
from curation.dataset.finish import complete_dataset as complete, write_dataset_results
from curation.dataset.registry import DatasetRecord, DatasetType, Status
from curation.dataset.results import WrittenCounts
from curation.inference import shards
from curation.inference.client import ServiceError
from curation.inference.shard_jobs import Progress, SubmittedShard, content_hash
from curation.ingest import steps
from curation.ingest.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig, StorageError, open_storage
from curation.ingest.validation import DatasetTooSmall, ValidationReport
from curation.run import Run
from curation.settings import Settings


class _ThreadTimeoutNotice(logging.Filter):
    """Drop Prefect's per-task warning that a timeout cannot interrupt a task in a pool thread (once per shard, on
    every run): our network calls carry their own request timeouts and budget, and the task timeout is the outer
    guard."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread. Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())

StorageConfig = LocalStorageConfig | AzureStorageConfig
# Inputs can carry credentials: tasks without a cache key of their own neither cache nor persist anything.
PRIVATE = {"cache_policy": NO_CACHE, "persist_result": False}

# Retries of the tasks that touch the network; their timeouts come from the run's settings (`network_timeouts`).
NETWORK = {
    "list-images": {"retries": 2, "retry_delay_seconds": 10},
    "check-service": {"retries": 1, "retry_delay_seconds": 5},
    "submit-shard": {"retries": 1, "retry_delay_seconds": 5},
    "store-shard": {"retries": 1, "retry_delay_seconds": 5},
    "poll-jobs": {"retries": 1, "retry_delay_seconds": 5},
    "write-results": {"retries": 2, "retry_delay_seconds": 5},
}
_REPLICAS = 4  # a submission or poll round may wait out this many replicas' budgets


def network_timeouts(settings: Settings) -> dict[str, float]:
    """Each network task's timeout, from the run's settings. The client already retries transient failures for
    transient_budget_s, so one request may take that long."""
    request = settings.transient_budget_s + settings.request_timeout_s
    return {
        "list-images": 3600,
        "check-service": 2 * request + 60,
        "submit-shard": _REPLICAS * request + 120,
        "store-shard": _REPLICAS * request + 600 + 10 * settings.shard_size,
        "poll-jobs": _REPLICAS * request + 600,
        "write-results": 6 * 3600,
    }


def with_timeout(t: Task[Any, Any], settings: Settings) -> Task[Any, Any]:
    """The task with the timeout the run's settings give it."""
    return t.with_options(timeout_seconds=network_timeouts(settings)[t.name])


def _not_a_service_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task, but not for a service error: the client already retried transient ones for the whole
    transient budget (a task retry would multiply it), and the others (401, 4xx) do not heal by retrying."""
    return not isinstance(state.data, ServiceError)


def _worth_listing_again(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a listing only when it may heal: not too few images, nor a missing container or a refused credential.
    Nor an endpoint that could not be reached: the Azure client already tried to connect for its whole bound
    (storage.AZURE_RETRIES_AND_TIMEOUTS, about 20 s), and a task retry would multiply it."""
    error = state.data if isinstance(state.data, BaseException) else None
    if isinstance(error, (DatasetTooSmall, ValueError)):
        return False
    return not isinstance(error, StorageError) or (error.transient and not error.unreachable)


def _shard_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Dataset id, shard index, the shard's content and its attempt (store-shard: its job id): never the storage
    config or the settings.

    A cached result is trusted only while the file it stands for (the shard's job, or its stored results) is in the
    data root: when it is gone, a fresh key makes the task run again."""
    shard = f"{parameters['shard']:05d}"
    if context.task.name == "store-shard":
        identity = parameters["job_id"]
    else:
        identity = f"{content_hash(parameters['blobs'])}-a{parameters.get('attempt', 0)}"
    store: DatasetStore = parameters["store"]
    key = "-".join([context.task.name, store.dataset_id, shard, identity])
    if context.task.name == "submit-shard":
        present = store.read_shard_job(parameters["shard"]) is not None
    else:
        present = store.has_files_shard(parameters["shard"])
    if not present and context.result_store.exists(key):
        return f"{key}-redo-{context.task_run.id}"
    return key


def _flow_run_cache_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Once per flow run: a retried flow run reuses what its first attempt registered (outside a flow run: no cache)."""
    if context.task_run.flow_run_id is None:
        return None
    return f"{context.task.name}-{context.task_run.flow_run_id}-{hashlib.sha256(parameters['name'].encode()).hexdigest()[:16]}"


# Shard tasks are cached and persisted: a flow retry, or a resumed run, does not redo a finished shard. Their keys
# and results hold ids, hashes and counts only.
SHARD_CACHE = {"cache_key_fn": _shard_cache_key, "persist_result": True}


def resolve_credentials(config: StorageConfig) -> StorageConfig:
    """Fill Azure credentials from the Prefect block the config names (credentials_block or secret_block)."""
    from curation.tasks.blocks import load_storage_credentials

    return load_storage_credentials(config)


@task(name="list-images", **NETWORK["list-images"], retry_condition_fn=_worth_listing_again, **PRIVATE)
def list_images(settings: Settings, config: StorageConfig) -> ValidationReport:
    """List the storage and validate it: refuse a dataset of too few acceptable images."""
    report = steps.list_and_validate(open_storage(config, settings), settings.min_images)
    get_run_logger().info("listing: %s", report.summary())
    return report


@task(name="check-service", **NETWORK["check-service"], retry_condition_fn=_not_a_service_error, **PRIVATE)
def check_service(run: Run) -> str:
    """Check an inference replica answers and accepts our API key, before any dataset is registered."""
    info = shards.check_replicas(run.replicas)
    get_run_logger().info("inference service ready on %s: model %s", info["replica"], info.get("model"))
    return str(info.get("model"))


@task(name="register-dataset", cache_key_fn=_flow_run_cache_key, persist_result=True)
def register_dataset(
    settings: Settings, name: str, config: StorageConfig, report: ValidationReport, dataset_type: DatasetType
) -> DatasetRecord:
    """Register the dataset as Processing (once per flow run: a retried run keeps its dataset)."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id) if flow_run.id else None
    catalog = Catalog(settings.data_root)
    record = steps.register_dataset(catalog, open_storage(config, settings), report, name, dataset_type, run_id)
    get_run_logger().info("registered dataset %s (%r)", record.id, record.name)
    return record


@task(name="reopen-dataset", **PRIVATE)
def reopen_dataset(settings: Settings, store: DatasetStore, config: StorageConfig) -> tuple[DatasetRecord, list[BlobInfo]]:
    """Reopen an unfinished dataset to resume it from its registered listing."""
    record, accepted = steps.resume_dataset(store, open_storage(config, settings))
    get_run_logger().info("resuming dataset %s: %d images", store.dataset_id, len(accepted))
    return record, accepted


@task(name="mark-processing", **PRIVATE)
def mark_processing(store: DatasetStore) -> DatasetRecord:
    """Mark the dataset Processing again (a retried flow run picks up a dataset its first attempt marked Failed)."""
    return store.update_record(status=Status.PROCESSING, failure_reason=None)


@task(name="submit-shard", **NETWORK["submit-shard"], retry_condition_fn=_not_a_service_error, **SHARD_CACHE)
def submit_shard(
    run: Run, store: DatasetStore, shard: int, blobs: list[BlobInfo], attempt: int = 0, avoid: tuple[str, ...] = ()
) -> SubmittedShard:
    """Sign one shard's URLs and submit it as a job to the next live inference replica; returns ids only."""
    storage = run.storage(store.dataset_id)
    submitted = shards.submit_shard(storage, run.replicas, run.settings, store, shard, blobs, attempt, avoid)
    get_run_logger().info(
        "shard %d (%d images, attempt %d): job %s on %s", shard, submitted.count, attempt, submitted.job_id, submitted.replica
    )
    return submitted


@task(name="store-shard", **NETWORK["store-shard"], retry_condition_fn=_not_a_service_error, **SHARD_CACHE)
def store_shard(run: Run, store: DatasetStore, shard: int, job_id: str) -> int:
    """Store one completed shard job's results (thumbnails, file facts, tags, embeddings) while other shards run.

    job_id names the shard's current job, so a re-submitted shard is a new task (the cache key); a stored shard is
    not redone. The run travels as a parameter: the task may run in another process (Dask)."""
    stored = shards.store_shard_results(run.replicas, run.settings, store, shard)
    get_run_logger().info("shard %d (job %s): %d images stored", shard, job_id, stored)
    return stored


@task(name="poll-jobs", **NETWORK["poll-jobs"], retry_condition_fn=_not_a_service_error, **PRIVATE)
def poll_jobs(run: Run, store: DatasetStore) -> Progress:
    """One status request per unfinished shard job; jobs lost with their replica are marked for re-submission."""
    progress = shards.check_job(run.replicas, store)
    get_run_logger().info(
        "dataset %s: %d/%d shard jobs Completed, %d/%d images done, %d failed%s",
        store.dataset_id, progress.completed, progress.shards, progress.done, progress.total, progress.failed,
        f"; lost: {'; '.join(progress.reasons)}" if progress.lost else "",
    )
    return progress


@task(name="write-results", **NETWORK["write-results"], **PRIVATE)
def write_results(store: DatasetStore) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from every shard's stored results."""
    written = write_dataset_results(store)
    get_run_logger().info(
        "dataset %s: results written, %d images, %d failed (%d retryable)",
        store.dataset_id, written.images, written.failed, written.retryable,
    )
    return written


@task(name="complete-dataset", **PRIVATE)
def complete_dataset(store: DatasetStore, max_retryable_share: float = 1.0) -> DatasetRecord:
    """Mark the dataset Completed, or Failed when every image failed or too many failed for a transient reason."""
    record = complete(store, max_retryable_share)
    get_run_logger().info("dataset %s %s", store.dataset_id, record.status.value)
    return record


@task(name="mark-failed", **PRIVATE)
def mark_failed(store: DatasetStore, reason: str) -> DatasetRecord:
    """Mark the dataset Failed with the reason."""
    get_run_logger().error("dataset %s Failed: %s", store.dataset_id, reason)
    return store.mark_failed(reason)
