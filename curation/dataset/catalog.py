"""The catalog of the data root: every file name and layout under it, behind typed reads and writes.

`Catalog` is the data root (its datasets, the usage ledger, the demo images); `DatasetStore` is one dataset. No other
module builds a path under the data root: steps take a store and call its methods. The layout:

    datasets/<id>/dataset.json                the registry record (curation.dataset.registry.DatasetRecord)
    datasets/<id>/<table>.parquet             files, metadata, embeddings, analytics, sampling, lineage (`Table`)
    datasets/<id>/sampling-report.json        `Document`s: the sampling's fidelity report, how a subset was
    datasets/<id>/selection.json                selected, the versions manifest
    datasets/<id>/versions.json
    datasets/<id>/metadata.v<N>.parquet       the tags of tag version N, kept when teach replaces them
    datasets/<id>/teach-labels-<UTC>.csv      labels the viewer taught from
    datasets/<id>/thumbnails/<ab>/<image id>[.v<N>].jpg
    datasets/<id>/work/listing.parquet        the accepted blobs, so a resumed run needs no new listing
    datasets/<id>/work/files-[v<VVVV>-]<NNNNN>.parquet   a shard's file facts and quality signals
    datasets/<id>/work/results-<NNNNN>.parquet  a shard's tags and embeddings
    datasets/<id>/work/jobs/shard-<NNNNN>.json  a shard's inference job
    usage.json                                the embedded service's usage ledger
    demo-images/                              the synthetic demo images
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation.dataset.atomic import atomic_path, write_text_atomic
from curation.dataset.parquet_io import RowGroupWriter, streaming_writer, write_table
from curation.dataset.registry import (
    DatasetNotFound,
    DatasetRecord,
    DatasetType,
    DemoDatasetProtected,
    Status,
    now_utc,
)
from curation.ingest.ids import is_object_id, new_object_id

RECORD_FILE = "dataset.json"
DATASETS = "datasets"  # one folder per dataset
FILES_SHARDS = ("files-*.parquet", "thumbnails-*.parquet")  # the second: data roots of earlier releases
RESULTS_SHARDS = "results-*.parquet"
SHARD_JOBS = "shard-*.json"
_VERSION_SHARD = re.compile(r"(?:files|thumbnails)-v(\d{4,})-\d+\.parquet$")
_SHARD_NAME = re.compile(r"(?:files|thumbnails)-(v\d{4,}-)?\d+\.parquet")


class Table(StrEnum):
    """The Parquet tables of a dataset."""

    FILES = "files"
    METADATA = "metadata"
    EMBEDDINGS = "embeddings"
    ANALYTICS = "analytics"
    SAMPLING = "sampling"
    LISTING = "listing"
    LINEAGE = "lineage"


class Document(StrEnum):
    """The JSON documents of a dataset (the record excepted: see `DatasetStore.load_record`)."""

    SAMPLING_REPORT = "sampling_report"
    SELECTION = "selection"
    VERSIONS = "versions"


class PathRefused(ValueError):
    """A stored relative path that would leave the data root (absolute, `..`, or a link pointing outside)."""


class DatasetProcessing(ValueError):
    """A Processing dataset cannot be deleted: its run still writes into its folder."""


@dataclass(frozen=True)
class _Layout:
    """The file names of one dataset, used by `DatasetStore` only."""

    root: Path  # data root
    dir: Path

    @property
    def record(self) -> Path:
        return self.dir / RECORD_FILE

    @property
    def files(self) -> Path:
        return self.dir / "files.parquet"

    @property
    def metadata(self) -> Path:
        return self.dir / "metadata.parquet"

    @property
    def embeddings(self) -> Path:
        return self.dir / "embeddings.parquet"

    @property
    def analytics(self) -> Path:
        return self.dir / "analytics.parquet"

    @property
    def sampling(self) -> Path:
        return self.dir / "sampling.parquet"

    @property
    def lineage(self) -> Path:
        return self.dir / "lineage.parquet"

    @property
    def sampling_report(self) -> Path:
        return self.dir / "sampling-report.json"

    @property
    def selection(self) -> Path:
        return self.dir / "selection.json"

    @property
    def versions(self) -> Path:
        return self.dir / "versions.json"

    def metadata_version(self, version: int) -> Path:
        return self.dir / f"metadata.v{version}.parquet"

    def teach_labels(self, stamp: str, n: int = 1) -> Path:
        return self.dir / (f"teach-labels-{stamp}.csv" if n == 1 else f"teach-labels-{stamp}-{n}.csv")

    @property
    def work(self) -> Path:
        """Per-shard intermediate files, so an interrupted run resumes without redoing shards."""
        return self.dir / "work"

    @property
    def listing(self) -> Path:
        return self.work / "listing.parquet"

    def files_shard(self, shard: int) -> Path:
        return self.work / f"files-{shard:05d}.parquet"

    def version_shard(self, version: int, shard: int) -> Path:
        return self.work / f"files-v{version:04d}-{shard:05d}.parquet"

    def results_shard(self, shard: int) -> Path:
        return self.work / f"results-{shard:05d}.parquet"

    @property
    def shard_jobs(self) -> Path:
        return self.work / "jobs"

    def shard_job(self, shard: int) -> Path:
        return self.shard_jobs / f"shard-{shard:05d}.json"

    @property
    def thumbnails(self) -> Path:
        return self.dir / "thumbnails"

    def thumbnail(self, image_id: str) -> Path:
        return self.thumbnails / image_id[:2] / f"{image_id}.jpg"

    def versioned_thumbnail(self, image_id: str, version: int) -> Path:
        return self.thumbnails / image_id[:2] / f"{image_id}.v{version}.jpg"


def _shard_name(shard: Path) -> str:
    """A thumbnail shard's file name; PathRefused for anything else."""
    name = Path(shard).name
    if not _SHARD_NAME.fullmatch(name):
        raise PathRefused(f"not a thumbnail shard: {shard}")
    return name


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays as their Python values; anything else (datetimes) as its text."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


@dataclass(frozen=True)
class DatasetStore:
    """One dataset under the data root: its record, tables, documents, thumbnails and per-shard work files.

    Built from the data root and a dataset id; a malformed id raises ValueError, so no path leaves the root.
    Plain data (a root and an id), so it pickles to Dask workers and Prefect tasks."""

    root: Path
    dataset_id: str
    _layout: _Layout = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset_id, str) or not is_object_id(self.dataset_id):
            raise ValueError(f"not a dataset id: {self.dataset_id!r} (expected 24 hex characters)")
        object.__setattr__(self, "root", Path(self.root))
        object.__setattr__(self, "_layout", _Layout(root=self.root, dir=self.root / DATASETS / self.dataset_id))

    # -- the registry record ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        """Whether the dataset has a registry record."""
        return self._layout.record.exists()

    def load_record(self) -> DatasetRecord:
        """The registry record; DatasetNotFound when there is none."""
        path = self._layout.record
        if not path.exists():
            raise DatasetNotFound(f"no dataset {self.dataset_id} under {self.root.resolve()}")
        return DatasetRecord.model_validate_json(path.read_text(encoding="utf-8"))

    def require_completed(self, doing: str) -> DatasetRecord:
        """The record of a Completed dataset; ValueError naming what cannot be done (`doing`: "sampled",
        "summarised", ...) when it is in another status, DatasetNotFound when it does not exist."""
        record = self.load_record()
        if record.status != Status.COMPLETED:
            raise ValueError(
                f"dataset {self.dataset_id} is {record.status.value}; only Completed datasets can be {doing}"
            )
        return record

    def save_record(self, record: DatasetRecord) -> DatasetRecord:
        """Write the record atomically, stamping `updated`."""
        if record.id != self.dataset_id:
            raise ValueError(f"record {record.id} does not belong to dataset {self.dataset_id}")
        record = record.model_copy(update={"updated": now_utc()})
        write_text_atomic(self._layout.record, record.model_dump_json(indent=2))
        return record

    def update_record(self, **changes: Any) -> DatasetRecord:
        """Load, change some fields, and save atomically."""
        return self.save_record(self.load_record().model_copy(update=changes))

    def mark_failed(self, reason: str) -> DatasetRecord:
        """Mark the dataset Failed with a reason a person can act on."""
        return self.update_record(status=Status.FAILED, failure_reason=reason)

    def deletable(self) -> DatasetRecord:
        """The record of a dataset that may be deleted; DemoDatasetProtected for the demo dataset, DatasetProcessing
        while a run writes into it (deleting it then would end that run with an error), DatasetNotFound."""
        record = self.load_record()
        if record.type == DatasetType.DEMO:
            raise DemoDatasetProtected(
                f"dataset {self.dataset_id} ({record.name!r}) is the demo dataset and cannot be deleted"
            )
        if record.status == Status.PROCESSING:
            raise DatasetProcessing(
                f"dataset {self.dataset_id} ({record.name!r}) is Processing: wait for it to end, or mark it Failed "
                "with `curation stale --mark-failed`, before deleting it"
            )
        return record

    def delete(self) -> None:
        """Erase the dataset and its results; refused for the demo dataset (DemoDatasetProtected) and a Processing
        one (DatasetProcessing)."""
        self.deletable()
        shutil.rmtree(self._layout.dir)

    def erase(self) -> None:
        """Remove whatever the dataset's folder holds, record included (a staging dataset)."""
        shutil.rmtree(self._layout.dir, ignore_errors=True)

    # -- tables -----------------------------------------------------------------------------------------------
    def table_path(self, table: Table) -> Path:
        """The table's local file, for what needs the file itself (uploading it whole)."""
        return getattr(self._layout, Table(table).value)

    def has(self, table: Table) -> bool:
        return self.table_path(table).exists()

    def mtime(self, table: Table) -> float:
        """The table's modification time, 0.0 when it is absent (a cache key)."""
        path = self.table_path(table)
        return path.stat().st_mtime if path.exists() else 0.0

    def read(self, table: Table, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.table_path(table), columns=columns)

    def frame(self, table: Table, columns: list[str] | None = None) -> pl.DataFrame:
        return pl.read_parquet(self.table_path(table), columns=columns)

    def scan(self, table: Table) -> pl.LazyFrame:
        return pl.scan_parquet(self.table_path(table))

    def schema(self, table: Table) -> pa.Schema:
        return pq.read_schema(self.table_path(table))

    def write(self, table: Table, data: pa.Table) -> None:
        """Write a whole table atomically: readers see the old file or the new one."""
        write_table(self.table_path(table), data)

    def writer(self, table: Table, schema: pa.Schema, row_group_size: int) -> AbstractContextManager[RowGroupWriter]:
        """Append to a table in row groups; it replaces the old one when the block ends without an error."""
        return streaming_writer(self.table_path(table), schema, row_group_size)

    def move_from(self, source: DatasetStore, item: Table | Document) -> bool:
        """Rename `source`'s table or document over this dataset's; False when the source has none."""
        src, dst = source._item_path(item), self._item_path(item)
        if not src.exists():
            return False
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return True

    def _item_path(self, item: Table | Document) -> Path:
        return self.table_path(item) if isinstance(item, Table) else getattr(self._layout, item.value)

    # -- documents --------------------------------------------------------------------------------------------
    def read_json(self, document: Document) -> Any:
        """The document's JSON value, None when it is absent."""
        path = getattr(self._layout, Document(document).value)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def write_json(self, document: Document, value: Any) -> None:
        """Write a document atomically; numpy values are written as plain numbers, datetimes as text."""
        path = getattr(self._layout, Document(document).value)
        write_text_atomic(path, json.dumps(value, indent=2, default=_json_default))

    # -- tag versions and teach labels ------------------------------------------------------------------------
    def has_metadata_version(self, version: int) -> bool:
        return self._layout.metadata_version(version).exists()

    def read_metadata_version(self, version: int) -> pa.Table:
        """The tags of tag version `version` (0 = the base model's), kept when a newer version replaced them."""
        return pq.read_table(self._layout.metadata_version(version))

    def keep_metadata_version(self, version: int) -> str | None:
        """Keep the current metadata as tag version `version` unless kept already (an interrupted run kept it);
        returns the kept file's name, None when there is no metadata to keep."""
        source, target = self._layout.metadata, self._layout.metadata_version(version)
        if not target.exists() and source.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(source, tmp)
        return target.name if target.exists() else None

    def new_labels_csv(self, now: datetime | None = None) -> Path:
        """A new teach-labels-<UTC timestamp>.csv beside the tables (never an existing file)."""
        stamp = (now or now_utc()).strftime("%Y%m%dT%H%M%SZ")
        n = 1
        while self._layout.teach_labels(stamp, n).exists():
            n += 1
        return self._layout.teach_labels(stamp, n)

    # -- thumbnails -------------------------------------------------------------------------------------------
    def thumbnail_path(self, image_id: str, version: int | None = None) -> Path:
        """Where an image's thumbnail is written; `version` names the copy an incremental version added."""
        if version is None:
            return self._layout.thumbnail(image_id)
        return self._layout.versioned_thumbnail(image_id, version)

    def relative(self, path: Path) -> str:
        """A file of this dataset as the files table records it: relative to the data root."""
        return Path(path).relative_to(self.root).as_posix()

    def adopt_thumbnail(self, relative: str, image_id: str, version: int) -> str:
        """Move a thumbnail (relative to the data root, e.g. a staging dataset's) to this dataset's copy for
        `version`; returns the new relative path."""
        target = self.thumbnail_path(image_id, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(Catalog(self.root).resolve(relative), target)
        return self.relative(target)

    def remove_thumbnails(self, relatives: Iterable[str]) -> None:
        """Delete thumbnails of this dataset no table names any more; a path outside its thumbnails is refused."""
        folder = self._layout.thumbnails.resolve()
        for relative in relatives:
            path = Catalog(self.root).resolve(relative)
            if not path.is_relative_to(folder):
                raise PathRefused(f"not a thumbnail of dataset {self.dataset_id}: {relative!r}")
            path.unlink(missing_ok=True)

    # -- per-shard work files ---------------------------------------------------------------------------------
    def has_files_shard(self, shard: int) -> bool:
        """Whether the shard's results are stored (its thumbnail shard is written last)."""
        return self._layout.files_shard(shard).exists()

    def files_shard_path(self, shard: int) -> Path:
        return self._layout.files_shard(shard)

    def write_files_shard(self, shard: int, table: pa.Table) -> None:
        write_table(self._layout.files_shard(shard), table)

    def files_shards(self) -> list[Path]:
        """Every thumbnail shard (a version's included), in name order: first curation's, then by version."""
        return sorted(p for pattern in FILES_SHARDS for p in self._layout.work.glob(pattern))

    def iter_files_shards(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for path in self.files_shards():
            yield pq.read_table(path, columns=columns)

    @staticmethod
    def shard_version(shard: Path) -> int:
        """The version that added a thumbnail shard; 0 for a shard of the dataset's first curation."""
        match = _VERSION_SHARD.match(Path(shard).name)
        return int(match.group(1)) if match else 0

    def write_version_shard(self, version: int, index: int, table: pa.Table) -> None:
        write_table(self._layout.version_shard(version, index), table)

    def carry_shard(self, shard: Path, table: pa.Table) -> None:
        """Write `table` as a thumbnail shard named like `shard` (another dataset's, for a version being built)."""
        write_table(self._layout.work / _shard_name(shard), table)

    def remove_shard(self, shard: Path) -> None:
        """Delete one of this dataset's thumbnail shards (as listed by `files_shards`)."""
        if Path(shard).parent != self._layout.work:
            raise PathRefused(f"not a thumbnail shard of dataset {self.dataset_id}: {shard}")
        (self._layout.work / _shard_name(shard)).unlink()

    def replace_shards_from(self, source: DatasetStore) -> None:
        """Rename the source's thumbnail shards over this dataset's and delete the shards it does not have."""
        names = {p.name for p in source.files_shards()}
        self._layout.work.mkdir(parents=True, exist_ok=True)
        for name in sorted(names):
            os.replace(source._layout.work / name, self._layout.work / name)
        for shard in self.files_shards():
            if shard.name not in names:
                shard.unlink()

    def results_shard_path(self, shard: int) -> Path:
        return self._layout.results_shard(shard)

    def write_results_shard(self, shard: int, table: pa.Table) -> None:
        write_table(self._layout.results_shard(shard), table)

    def results_shards(self) -> list[Path]:
        """Every stored shard's tags and embeddings file, in shard order."""
        return sorted(self._layout.work.glob(RESULTS_SHARDS))

    def iter_results_shards(self) -> Iterator[pa.Table]:
        for path in self.results_shards():
            yield pq.read_table(path)

    def shard_job_path(self, shard: int) -> Path:
        return self._layout.shard_job(shard)

    def write_shard_job(self, shard: int, text: str) -> None:
        """Write a shard's job (JSON, curation.inference.shard_jobs.ShardJob) atomically."""
        write_text_atomic(self._layout.shard_job(shard), text)

    def read_shard_job(self, shard: int) -> str | None:
        path = self._layout.shard_job(shard)
        return path.read_text(encoding="utf-8") if path.exists() else None

    def read_shard_jobs(self) -> list[str]:
        """Every shard's job, in shard order."""
        return [p.read_text(encoding="utf-8") for p in sorted(self._layout.shard_jobs.glob(SHARD_JOBS))]


@dataclass(frozen=True)
class Catalog:
    """The data root: its datasets, and the root-level files (usage ledger, demo images)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def dataset(self, dataset_id: str) -> DatasetStore:
        """One dataset's store; ValueError for a malformed id (whether it exists or not)."""
        return DatasetStore(self.root, dataset_id)

    def dataset_ids(self) -> list[str]:
        """The ids of the datasets that have a record, in no particular order."""
        folder = self.root / DATASETS
        if not folder.exists():
            return []
        return [c.name for c in folder.iterdir() if is_object_id(c.name) and self.dataset(c.name).exists()]

    def records(self, include_staging: bool = False) -> list[DatasetRecord]:
        """Every dataset's record, newest first; unreadable records and (unless asked) staging datasets skipped."""
        records = []
        for dataset_id in self.dataset_ids():
            try:
                record = self.dataset(dataset_id).load_record()
            except (ValueError, DatasetNotFound):  # malformed, or deleted meanwhile
                continue
            if include_staging or record.parent_id is None:
                records.append(record)
        return sorted(records, key=lambda r: r.created, reverse=True)

    def register(self, name: str, **fields: Any) -> DatasetRecord:
        """Create a dataset record with status Processing and a fresh ObjectId."""
        dataset_id = new_object_id()
        return self.dataset(dataset_id).save_record(DatasetRecord(id=dataset_id, name=name, **fields))

    def stale(self, older_than: timedelta) -> list[DatasetRecord]:
        """Datasets still Processing whose record has not been touched for `older_than` (tracking touches it)."""
        cutoff = now_utc() - older_than
        return [r for r in self.records() if r.status == Status.PROCESSING and r.updated < cutoff]

    @property
    def usage_file(self) -> Path:
        """The usage ledger the embedded service writes and the viewer reads (unless the settings name another)."""
        return self.root / "usage.json"

    @property
    def demo_images(self) -> Path:
        """The folder of the synthetic demo images."""
        return self.root / "demo-images"

    def resolve(self, relative: str | None) -> Path:
        """A file named relative to the data root (a thumbnail in a files table); PathRefused when it would
        leave the root."""
        if not relative:
            raise PathRefused("no path")
        candidate = Path(relative)
        if candidate.is_absolute() or ".." in candidate.parts or "\\" in relative:
            raise PathRefused(f"path outside the data root: {relative!r}")
        base = self.root.resolve()
        resolved = (base / candidate).resolve()
        if not resolved.is_relative_to(base):
            raise PathRefused(f"path outside the data root: {relative!r}")
        return resolved
