"""The dataset registry's record: what a dataset is (name, status, counts, provenance) and its states.

The record is kept as `dataset.json` by the catalog (curation.dataset.catalog), which reads and writes it."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    pass


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


def now_utc() -> datetime:
    """The current time, timezone-aware (records and versions are stamped in UTC)."""
    return datetime.now(UTC)


class Counts(BaseModel):
    found: int = 0
    accepted: int = 0
    rejected: dict[str, int] = Field(default_factory=dict)
    processed: int = 0
    failed: int = 0
    retryable: int = 0  # of the failed: a transient cause; `curation curate --resume ID` processes them again


class TransientFailures(RuntimeError):
    """A run ended with more images failed for a transient reason than CURATION_MAX_RETRYABLE_SHARE allows, or a
    retry of such images processed none of them; the images are kept as retryable, so a later run processes them."""


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
    created: datetime = Field(default_factory=now_utc)
    updated: datetime = Field(default_factory=now_utc)
    storage: dict[str, Any] = Field(default_factory=dict)
    meta_model: str | None = None
    embedding_model: str | None = None
    counts: Counts = Field(default_factory=Counts)
    parent_id: str | None = None  # set on the hidden staging dataset that curates a new version of parent_id
    version: int | None = None  # the last committed version of an incrementally curated dataset
    flow_run_id: str | None = None  # the Prefect flow run that registered it (lineage of its first version)
