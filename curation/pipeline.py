"""The pipeline's steps as plain functions; tasks/ decorates them and flows/ wires them."""

from __future__ import annotations

from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation import registry
from curation.client import InferenceClient, JobStatus
from curation.ids import image_id_for
from curation.parquet_io import rows_to_table, shard_schema, write_table
from curation.paths import DatasetPaths, dataset_paths
from curation.registry import Counts, DatasetRecord, DatasetType, Status
from curation.results import WrittenCounts, write_results
from curation.settings import Settings
from curation.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig, open_storage, sas_expiry
from curation.taxonomy import DEFAULT_TAXONOMY
from curation.thumbnails import signal_names, thumbnail_rows
from curation.validation import ValidationReport, require_enough, validate_listing

StorageConfig = LocalStorageConfig | AzureStorageConfig


def list_and_validate(config: StorageConfig, settings: Settings) -> ValidationReport:
    """List the storage and keep acceptable images; raises DatasetTooSmall when there are too few."""
    report = validate_listing(open_storage(config, settings).list_blobs())
    require_enough(report, settings.min_images)
    return report


def register_dataset(
    name: str, config: StorageConfig, report: ValidationReport, settings: Settings, dataset_type: DatasetType
) -> DatasetRecord:
    """Register a Processing dataset; its storage descriptor holds no secret."""
    storage = open_storage(config, settings)
    counts = Counts(found=report.found, accepted=len(report.accepted), rejected=report.rejected)
    record = registry.register(settings.data_root, name, type=dataset_type, storage=storage.descriptor(), counts=counts)
    listing = pa.table({"name": [b.name for b in report.accepted], "size": [b.size for b in report.accepted]})
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
    return record, [BlobInfo(row["name"], row["size"]) for row in listing]


def shards(blobs: list[BlobInfo], size: int) -> list[list[BlobInfo]]:
    """Cut work into shards, so orchestration costs per shard, never per image."""
    return [blobs[i : i + size] for i in range(0, len(blobs), size)]


def sign_items(config: StorageConfig, settings: Settings, blobs: list[BlobInfo]) -> list[dict[str, Any]]:
    """Job items with a read-only signed URL per blob. The result holds SAS tokens: never persist it."""
    storage = open_storage(config, settings)
    expiry = sas_expiry(settings)
    return [{"image_id": image_id_for(b.name), "url": storage.sign_url(b.name, expiry), "size": b.size} for b in blobs]


def submit_images(client: InferenceClient, dataset_id: str, items: list[dict[str, Any]], settings: Settings) -> str:
    """Submit the job (idempotent per dataset) and remember its id on the record."""
    job_id = client.submit_job(items, idempotency_key=dataset_id)
    info = client.model_info()
    registry.update(settings.data_root, dataset_id, job_id=job_id, meta_model=info.get("model"))
    return job_id


def make_thumbnail_shard(
    config: StorageConfig, settings: Settings, dataset_id: str, shard: int, blobs: list[BlobInfo]
) -> int:
    """Thumbnails and file facts for one shard, saved as a shard file; a finished shard is not redone."""
    paths = dataset_paths(settings.data_root, dataset_id)
    target = paths.thumbnail_shard(shard)
    if target.exists():
        return 0
    storage = open_storage(config, settings)
    rows = thumbnail_rows(blobs, storage.read_bytes, paths.thumbnail, settings.data_root, settings.thumbnail_size)
    write_table(target, rows_to_table(rows, shard_schema(signal_names())))
    return len(rows)


def check_job(client: InferenceClient, dataset_id: str, settings: Settings) -> JobStatus:
    """One status request for the dataset's job; the record's progress and `updated` stamp follow it."""
    record = registry.load(settings.data_root, dataset_id)
    if record.job_id is None:
        raise RuntimeError(f"dataset {dataset_id} has no inference job yet")
    status = client.job_status(record.job_id)
    if record.status == Status.PROCESSING:
        counts = record.counts.model_copy(update={"processed": status.done - status.failed, "failed": status.failed})
        registry.update(settings.data_root, dataset_id, counts=counts)
    return status


def write_dataset_results(client: InferenceClient, dataset_id: str, settings: Settings) -> WrittenCounts:
    """Write the results Parquet and record counts and models; the status changes in `complete_dataset`."""
    paths: DatasetPaths = dataset_paths(settings.data_root, dataset_id)
    record = registry.load(settings.data_root, dataset_id)
    if record.job_id is None:
        raise RuntimeError(f"dataset {dataset_id} has no inference job yet")
    written = write_results(paths, client.iter_results(record.job_id, settings.results_page_size), DEFAULT_TAXONOMY)
    info = client.model_info()
    counts = record.counts.model_copy(update={"processed": written.images - written.failed, "failed": written.failed})
    registry.update(
        settings.data_root,
        dataset_id,
        counts=counts,
        meta_model=info.get("model"),
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
