"""The dataset registry: one small JSON record per dataset folder, written atomically."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from curation.atomic import write_text_atomic
from curation.ids import is_object_id, new_object_id
from curation.paths import dataset_paths, datasets_dir


class Status(StrEnum):
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"


class DatasetType(StrEnum):
    DEMO = "demo"
    USER = "user"


class DatasetNotFound(LookupError):
    """No dataset with that id under the data root."""


class DemoDatasetProtected(PermissionError):
    """The demo dataset cannot be deleted."""


def _now() -> datetime:
    return datetime.now(UTC)


class Counts(BaseModel):
    found: int = 0
    accepted: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    processed: int = 0
    failed: int = 0


class DatasetFailed(RuntimeError):
    """A run ended its dataset Failed: the flow run fails too (Prefect shows it), the SDK returns the dataset id."""

    def __init__(self, dataset_id: str, reason: str | None) -> None:
        super().__init__(dataset_id, reason)  # both in args: the exception pickles (Prefect states, Dask)
        self.dataset_id, self.reason = dataset_id, reason

    def __str__(self) -> str:
        return f"dataset {self.dataset_id} Failed: {self.reason or 'no reason recorded'}"


class DatasetRecord(BaseModel):
    """The registry entry. `storage` is a descriptor without secrets."""

    id: str
    name: str
    status: Status = Status.PROCESSING
    failure_reason: str | None = None
    type: DatasetType = DatasetType.USER
    original_dataset: str | None = None
    created: datetime = Field(default_factory=_now)
    updated: datetime = Field(default_factory=_now)
    storage: dict[str, Any] = Field(default_factory=dict)
    meta_model: str | None = None
    embedding_model: str | None = None
    counts: Counts = Field(default_factory=Counts)
    parent_id: str | None = None  # set on the hidden staging dataset that curates a new version of parent_id
    version: int | None = None  # the last committed version of an incrementally curated dataset
    flow_run_id: str | None = None  # the Prefect flow run that registered it (lineage of its first version)


def save(root: Path, record: DatasetRecord) -> DatasetRecord:
    """Write the record atomically, stamping `updated`."""
    record = record.model_copy(update={"updated": _now()})
    write_text_atomic(dataset_paths(root, record.id).record, record.model_dump_json(indent=2))
    return record


def register(root: Path, name: str, **fields: Any) -> DatasetRecord:
    """Create a new dataset record with status Processing and a fresh ObjectId."""
    return save(root, DatasetRecord(id=new_object_id(), name=name, **fields))


def load(root: Path, dataset_id: str) -> DatasetRecord:
    """Read one record; raises DatasetNotFound with the id when it is missing."""
    path = dataset_paths(root, dataset_id).record
    if not path.exists():
        raise DatasetNotFound(f"no dataset {dataset_id} under {Path(root).resolve()}")
    return DatasetRecord.model_validate_json(path.read_text(encoding="utf-8"))


def update(root: Path, dataset_id: str, **changes: Any) -> DatasetRecord:
    """Load, change some fields, and save atomically."""
    record = load(root, dataset_id)
    return save(root, record.model_copy(update=changes))


def mark_failed(root: Path, dataset_id: str, reason: str) -> DatasetRecord:
    """Mark a dataset Failed with a reason a person can act on."""
    return update(root, dataset_id, status=Status.FAILED, failure_reason=reason)


def list_records(root: Path, include_staging: bool = False) -> list[DatasetRecord]:
    """All datasets under the root, newest first. Unreadable records and (unless asked) staging datasets are skipped."""
    folder = datasets_dir(root)
    records = []
    if folder.exists():
        for child in folder.iterdir():
            if is_object_id(child.name) and (child / "dataset.json").exists():
                try:
                    record = load(root, child.name)
                except ValueError:
                    continue
                if include_staging or record.parent_id is None:
                    records.append(record)
    return sorted(records, key=lambda r: r.created, reverse=True)


def stale(root: Path, older_than: timedelta) -> list[DatasetRecord]:
    """Datasets still Processing whose record has not been touched for `older_than` (tracking touches it)."""
    cutoff = _now() - older_than
    return [r for r in list_records(root) if r.status == Status.PROCESSING and r.updated < cutoff]


def delete(root: Path, dataset_id: str) -> None:
    """Erase a dataset and its results. The demo dataset is refused."""
    record = load(root, dataset_id)
    if record.type == DatasetType.DEMO:
        raise DemoDatasetProtected(f"dataset {dataset_id} ({record.name!r}) is the demo dataset and cannot be deleted")
    shutil.rmtree(dataset_paths(root, dataset_id).dir)
