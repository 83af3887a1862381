"""Tasks of the curate-dataset and track-curation flows."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from curation import pipeline, registry
from curation.client import JobStatus, ServiceError, connect
from curation.registry import DatasetRecord, DatasetType
from curation.settings import Settings, get_settings
from curation.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig
from curation.results import WrittenCounts
from curation.validation import ValidationReport

StorageConfig = LocalStorageConfig | AzureStorageConfig
# Inputs can carry credentials and outputs SAS URLs: never cache or persist them.
PRIVATE = {"cache_policy": NO_CACHE, "persist_result": False}


def _not_a_service_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task, but not for a service error: the client already retried transient ones for the whole
    transient budget (a task retry would multiply it), and the others (401, 4xx) do not heal by retrying."""
    return not isinstance(state.data, ServiceError)


def resolve_credentials(config: StorageConfig) -> StorageConfig:
    """Fill Azure credentials from the Prefect block the config names (credentials_block or secret_block)."""
    from tasks.blocks import load_storage_credentials

    return load_storage_credentials(config)


@task(name="list-images", **PRIVATE)
def list_images(config: StorageConfig) -> ValidationReport:
    """List the storage and validate it: refuse a dataset of too few acceptable images."""
    report = pipeline.list_and_validate(config, get_settings())
    get_run_logger().info("listing: %s", report.summary())
    return report


@task(name="check-service", **PRIVATE)
def check_service() -> str:
    """Check the inference service answers and accepts our API key, before any dataset is registered."""
    with connect(get_settings()) as client:
        info = client.check_access()
    get_run_logger().info("inference service ready: model %s", info.get("model"))
    return str(info.get("model"))


@task(name="register-dataset", **PRIVATE)
def register_dataset(name: str, config: StorageConfig, report: ValidationReport, dataset_type: DatasetType) -> DatasetRecord:
    """Register the dataset as Processing."""
    record = pipeline.register_dataset(name, config, report, get_settings(), dataset_type)
    get_run_logger().info("registered dataset %s (%r)", record.id, record.name)
    return record


@task(name="reopen-dataset", **PRIVATE)
def reopen_dataset(dataset_id: str, config: StorageConfig) -> tuple[DatasetRecord, list[BlobInfo]]:
    """Reopen an unfinished dataset to resume it from its registered listing."""
    record, accepted = pipeline.resume_dataset(dataset_id, config, get_settings())
    get_run_logger().info("resuming dataset %s: %d images", dataset_id, len(accepted))
    return record, accepted


@task(name="sign-urls", **PRIVATE)
def sign_urls(config: StorageConfig, blobs: list[BlobInfo]) -> list[dict[str, Any]]:
    """Sign a read-only SAS URL per image."""
    return pipeline.sign_items(config, get_settings(), blobs)


@task(name="submit-job", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_a_service_error, **PRIVATE)
def submit_job(dataset_id: str, items: list[dict[str, Any]]) -> str:
    """Submit the images to the inference service (idempotent per dataset)."""
    settings = get_settings()
    with connect(settings) as client:
        job_id = pipeline.submit_images(client, dataset_id, items, settings)
    get_run_logger().info("submitted %d images as job %s", len(items), job_id)
    return job_id


@task(name="make-thumbnails", retries=1, **PRIVATE)
def make_thumbnails(
    config: StorageConfig, settings: Settings, dataset_id: str, shard: int, blobs: list[BlobInfo]
) -> int:
    """Make one shard's thumbnails (decoding each image once) and record its file facts."""
    # Settings come in as a parameter, not from get_settings(): the task may run in another process (Dask).
    return pipeline.make_thumbnail_shard(config, settings, dataset_id, shard, blobs)


@task(name="poll-job", **PRIVATE)
def poll_job(dataset_id: str) -> JobStatus:
    """One status request; transient failures are retried with backoff inside the client."""
    settings = get_settings()
    with connect(settings) as client:
        status = pipeline.check_job(client, dataset_id, settings)
    get_run_logger().info("job %s: %s, %d/%d done, %d failed", status.job_id, status.status, status.done, status.total, status.failed)
    return status


@task(name="write-results", retries=2, retry_delay_seconds=5, retry_condition_fn=_not_a_service_error, **PRIVATE)
def write_results(dataset_id: str) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from the job's results, in pages."""
    settings = get_settings()
    with connect(settings) as client:
        written = pipeline.write_dataset_results(client, dataset_id, settings)
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
