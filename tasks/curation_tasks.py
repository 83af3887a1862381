"""Tasks of the curate-dataset and track-curation flows."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from curation import pipeline, registry
from curation.client import ServiceError
from curation.paths import dataset_paths
from curation.registry import DatasetRecord, DatasetType
from curation.settings import Settings, get_settings
from curation.results import WrittenCounts
from curation.shard_jobs import Progress, SubmittedShard, content_hash
from curation.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig
from curation.validation import ValidationReport


class _ThreadTimeoutNotice(logging.Filter):
    """Drop Prefect's per-task warning that a timeout cannot interrupt a task in a pool thread (once per shard, on
    every run): our network calls carry their own request timeouts and budget, the task timeout is the outer guard,
    and the README says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "running in a worker thread. Timeouts in worker threads" not in record.getMessage()


logging.getLogger("prefect.task_runs").addFilter(_ThreadTimeoutNotice())

StorageConfig = LocalStorageConfig | AzureStorageConfig
# Inputs can carry credentials: tasks without a cache key of their own neither cache nor persist anything.
PRIVATE = {"cache_policy": NO_CACHE, "persist_result": False}

# Retries and timeouts of the tasks that touch the network, from the settings at import. The client already retries
# transient failures for transient_budget_s, so one request may take that long; a task retry only follows errors
# that are not service errors (see _not_a_service_error).
_S = get_settings()
_REQUEST_S = _S.transient_budget_s + _S.request_timeout_s
_REPLICAS = 4  # a submission or poll round may wait out this many replicas' budgets
NETWORK = {
    "list-images": {"retries": 2, "retry_delay_seconds": 10, "timeout_seconds": 3600},
    "check-service": {"retries": 1, "retry_delay_seconds": 5, "timeout_seconds": 2 * _REQUEST_S + 60},
    "submit-shard": {"retries": 1, "retry_delay_seconds": 5, "timeout_seconds": _REPLICAS * _REQUEST_S + 120},
    "store-shard": {"retries": 1, "retry_delay_seconds": 5, "timeout_seconds": _REPLICAS * _REQUEST_S + 600 + 10 * _S.shard_size},
    "poll-jobs": {"retries": 1, "retry_delay_seconds": _S.poll_interval_s, "timeout_seconds": _REPLICAS * _REQUEST_S + 600},
    "write-results": {"retries": 2, "retry_delay_seconds": 5, "timeout_seconds": 6 * 3600},
}


def _not_a_service_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task, but not for a service error: the client already retried transient ones for the whole
    transient budget (a task retry would multiply it), and the others (401, 4xx) do not heal by retrying."""
    return not isinstance(state.data, ServiceError)


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
    key = "-".join([context.task.name, parameters["dataset_id"], shard, identity])
    paths = dataset_paths(parameters["settings"].data_root, parameters["dataset_id"])
    output = paths.shard_job if context.task.name == "submit-shard" else paths.thumbnail_shard
    if not output(parameters["shard"]).exists() and context.result_store.exists(key):
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
    from tasks.blocks import load_storage_credentials

    return load_storage_credentials(config)


@task(name="list-images", **NETWORK["list-images"], **PRIVATE)
def list_images(config: StorageConfig) -> ValidationReport:
    """List the storage and validate it: refuse a dataset of too few acceptable images."""
    report = pipeline.list_and_validate(config, get_settings())
    get_run_logger().info("listing: %s", report.summary())
    return report


@task(name="check-service", **NETWORK["check-service"], retry_condition_fn=_not_a_service_error, **PRIVATE)
def check_service() -> str:
    """Check an inference replica answers and accepts our API key, before any dataset is registered."""
    info = pipeline.check_replicas(get_settings())
    get_run_logger().info("inference service ready on %s: model %s", info["replica"], info.get("model"))
    return str(info.get("model"))


@task(name="register-dataset", cache_key_fn=_flow_run_cache_key, persist_result=True)
def register_dataset(name: str, config: StorageConfig, report: ValidationReport, dataset_type: DatasetType) -> DatasetRecord:
    """Register the dataset as Processing (once per flow run: a retried run keeps its dataset)."""
    from prefect.runtime import flow_run

    run_id = str(flow_run.id) if flow_run.id else None
    record = pipeline.register_dataset(name, config, report, get_settings(), dataset_type, flow_run_id=run_id)
    get_run_logger().info("registered dataset %s (%r)", record.id, record.name)
    return record


@task(name="reopen-dataset", **PRIVATE)
def reopen_dataset(dataset_id: str, config: StorageConfig) -> tuple[DatasetRecord, list[BlobInfo]]:
    """Reopen an unfinished dataset to resume it from its registered listing."""
    record, accepted = pipeline.resume_dataset(dataset_id, config, get_settings())
    get_run_logger().info("resuming dataset %s: %d images", dataset_id, len(accepted))
    return record, accepted


@task(name="mark-processing", **PRIVATE)
def mark_processing(dataset_id: str) -> DatasetRecord:
    """Mark the dataset Processing again (a retried flow run picks up a dataset its first attempt marked Failed)."""
    return registry.update(get_settings().data_root, dataset_id, status=registry.Status.PROCESSING, failure_reason=None)


@task(name="submit-shard", **NETWORK["submit-shard"], retry_condition_fn=_not_a_service_error, **SHARD_CACHE)
def submit_shard(
    config: StorageConfig,
    settings: Settings,
    dataset_id: str,
    shard: int,
    blobs: list[BlobInfo],
    attempt: int = 0,
    avoid: tuple[str, ...] = (),
) -> SubmittedShard:
    """Sign one shard's URLs and submit it as a job to the next live inference replica; returns ids only."""
    submitted = pipeline.submit_shard(config, settings, dataset_id, shard, blobs, attempt, avoid)
    get_run_logger().info(
        "shard %d (%d images, attempt %d): job %s on %s", shard, submitted.count, attempt, submitted.job_id, submitted.replica
    )
    return submitted


@task(name="store-shard", **NETWORK["store-shard"], retry_condition_fn=_not_a_service_error, **SHARD_CACHE)
def store_shard(config: StorageConfig | None, settings: Settings, dataset_id: str, shard: int, job_id: str) -> int:
    """Store one completed shard job's results (thumbnails, file facts, tags, embeddings) while other shards run.

    job_id names the shard's current job, so a re-submitted shard is a new task (the cache key); a stored shard is
    not redone."""
    # Settings come in as a parameter, not from get_settings(): the task may run in another process (Dask).
    stored = pipeline.store_shard_results(config, settings, dataset_id, shard)
    get_run_logger().info("shard %d (job %s): %d images stored", shard, job_id, stored)
    return stored


@task(name="poll-jobs", **NETWORK["poll-jobs"], retry_condition_fn=_not_a_service_error, **PRIVATE)
def poll_jobs(dataset_id: str) -> Progress:
    """One status request per unfinished shard job; jobs lost with their replica are marked for re-submission."""
    progress = pipeline.check_job(dataset_id, get_settings())
    get_run_logger().info(
        "dataset %s: %d/%d shard jobs Completed, %d/%d images done, %d failed%s",
        dataset_id, progress.completed, progress.shards, progress.done, progress.total, progress.failed,
        f"; lost: {'; '.join(progress.reasons)}" if progress.lost else "",
    )
    return progress


@task(name="write-results", **NETWORK["write-results"], retry_condition_fn=_not_a_service_error, **PRIVATE)
def write_results(dataset_id: str, config: StorageConfig | None = None) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from every shard's stored results (storing any not stored)."""
    written = pipeline.write_dataset_results(dataset_id, get_settings(), config)
    get_run_logger().info("dataset %s: results written, %d images, %d failed", dataset_id, written.images, written.failed)
    return written


@task(name="complete-dataset", **PRIVATE)
def complete_dataset(dataset_id: str) -> DatasetRecord:
    """Mark the dataset Completed (or Failed when every image failed)."""
    record = pipeline.complete_dataset(dataset_id, get_settings())
    get_run_logger().info("dataset %s %s", dataset_id, record.status.value)
    return record


@task(name="mark-failed", **PRIVATE)
def mark_failed(dataset_id: str, reason: str) -> DatasetRecord:
    """Mark the dataset Failed with the reason."""
    get_run_logger().error("dataset %s Failed: %s", dataset_id, reason)
    return registry.mark_failed(get_settings().data_root, dataset_id, reason)
