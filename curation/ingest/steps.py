"""Ingest: list and validate the storage, register the dataset with its listing, reopen one to resume it."""

from __future__ import annotations

import pyarrow as pa

from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.registry import Counts, DatasetRecord, DatasetType, Status
from curation.ingest.storage import AzureStorageConfig, BlobInfo, LocalStorageConfig, Storage
from curation.ingest.validation import ValidationReport, require_enough, validate_listing

StorageConfig = LocalStorageConfig | AzureStorageConfig


def list_and_validate(storage: Storage, min_images: int) -> ValidationReport:
    """List the storage and keep acceptable images; raises DatasetTooSmall when there are too few."""
    report = validate_listing(storage.list_blobs())
    require_enough(report, min_images)
    return report


def register_dataset(
    catalog: Catalog,
    storage: Storage,
    report: ValidationReport,
    name: str,
    dataset_type: DatasetType,
    flow_run_id: str | None = None,
) -> DatasetRecord:
    """Register a Processing dataset with its accepted listing; its storage descriptor holds no secret."""
    counts = Counts(found=report.found, accepted=len(report.accepted), rejected=report.rejected)
    record = catalog.register(
        name, type=dataset_type, storage=storage.descriptor(), counts=counts, flow_run_id=flow_run_id
    )
    listing = pa.table(
        {
            "name": [b.name for b in report.accepted],
            "size": [b.size for b in report.accepted],
            "etag": pa.array([b.etag for b in report.accepted], pa.string()),  # curate-new-blobs adopts it as v1
        }
    )
    catalog.dataset(record.id).write(Table.LISTING, listing)
    return record


def resume_dataset(store: DatasetStore, storage: Storage) -> tuple[DatasetRecord, list[BlobInfo]]:
    """Reopen an unfinished dataset: its record and registered listing; refuses another storage or a done dataset."""
    dataset_id = store.dataset_id
    record = store.load_record()
    if record.status == Status.COMPLETED:
        raise ValueError(f"dataset {dataset_id} is already Completed, with no retryable images; nothing to resume")
    require_same_storage(record, storage)
    if not store.has(Table.LISTING):
        raise ValueError(f"dataset {dataset_id} has no registered listing to resume from; curate it again")
    listing = store.read(Table.LISTING).to_pylist()
    record = store.update_record(status=Status.PROCESSING, failure_reason=None)
    return record, [BlobInfo(row["name"], row["size"], row.get("etag")) for row in listing]


def require_same_storage(record: DatasetRecord, storage: Storage) -> None:
    """A dataset is resumed from the storage it was curated from (ValueError otherwise)."""
    described = storage.descriptor()
    if any(described.get(k) != record.storage.get(k) for k in ("kind", "container_name", "path", "prefix")):
        raise ValueError(f"dataset {record.id} was curated from other storage: {record.storage}")


def storage_of(record: DatasetRecord) -> StorageConfig:
    """The storage a dataset was curated from, rebuilt from its descriptor; Azure credentials come from the settings."""
    d = record.storage
    if d.get("kind") == "local":
        return LocalStorageConfig(path=d["path"], prefix=d.get("prefix"))
    keys = ("container_name", "account_name", "account_url", "prefix", "credentials_block", "secret_block")
    principal = ("tenant_id", "client_id")  # Azure AD: the service principal's ids (its secret comes as the key's)
    return AzureStorageConfig(**{k: d.get(k) for k in keys + principal}, azure_ad=bool(d.get("azure_ad")))
