"""Versions of an incrementally curated dataset: lineage, the diff of a listing against it, and merging a version in.

A dataset curated by `curate-new-blobs` keeps, beside its tables:

- `lineage.parquet` (LINEAGE_SCHEMA): one row per image a committed version curated: which blob (name, change token,
  size), which version and which Prefect flow run. It is what the next run diffs the listing against, so it is
  written LAST: the commit point of a version.
- `versions.json`: the manifest, one entry per version (version, flow_run_id, created, added, changed, failed, images).

What counts as curated: an image that succeeded, or whose bytes do not decode (the same bytes would fail again; it
is retried once the blob changes). An image that failed to be read, fetched or tagged is not recorded, so the next
run retries it.

Adding version N never touches the dataset the viewer reads until it is complete. The delta is curated as a hidden
staging dataset (`parent_id` = the target); `build_version` then turns the staging folder into the whole version N
(the target's tables minus replaced rows plus the delta's, the layout recomputed, the target's shards minus
replaced rows plus the delta's under version-unique names, thumbnails moved to version-unique names), the flow
recomputes analytics and sampling there, and `publish_version` renames each finished file over the target's.
A crash before the lineage write leaves the lineage as it was: the next run sees the same blobs as missing and
redoes them, replacing their rows by image id, so nothing is doubled.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation import registry
from curation.atomic import write_text_atomic
from curation.ids import image_id_for
from curation.parquet_io import FILES_SCHEMA, write_table
from curation.paths import DatasetPaths, dataset_paths
from curation.registry import Counts, DatasetRecord, Status
from curation.results import write_embeddings
from curation.storage import BlobInfo
from curation.validation import ValidationReport

LINEAGE_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("blob_name", pa.string(), nullable=False),
        pa.field("etag", pa.string()),  # the change token: Azure's ETag, or mtime_ns-size of a local file
        pa.field("size", pa.int64()),
        pa.field("version", pa.int64()),
        pa.field("flow_run_id", pa.string()),
        pa.field("added_at", pa.timestamp("us", tz="UTC")),
        pa.field("error", pa.string()),  # null, or why the bytes do not decode
    ]
)
# Which storage a dataset was curated from: the descriptor without secrets (storage.descriptor()).
STORAGE_KEYS = ("kind", "path", "account_name", "container_name", "account_url", "prefix")
_VERSION_SHARD = re.compile(r"thumbnails-v(\d{4,})-\d+\.parquet$")


@dataclass(frozen=True)
class Delta:
    """Accepted blobs the lineage does not hold (new) or holds with another change token or size (changed)."""

    new: list[BlobInfo]
    changed: list[BlobInfo]

    @property
    def blobs(self) -> list[BlobInfo]:
        return sorted(self.new + self.changed, key=lambda b: b.name)

    def __len__(self) -> int:
        return len(self.new) + len(self.changed)


def read_lineage(paths: DatasetPaths) -> pl.DataFrame:
    """The dataset's lineage; empty (with its schema) before the first version."""
    table = pq.read_table(paths.lineage) if paths.lineage.exists() else LINEAGE_SCHEMA.empty_table()
    return pl.from_arrow(table)  # type: ignore[return-value]


def read_versions(paths: DatasetPaths) -> list[dict[str, Any]]:
    """The versions manifest, oldest first."""
    return json.loads(paths.versions.read_text(encoding="utf-8")) if paths.versions.exists() else []


def current_version(paths: DatasetPaths) -> int:
    """The last committed version (0 before the first): the lineage is the commit point."""
    lineage = read_lineage(paths)
    return int(lineage["version"].max() or 0) if lineage.height else 0  # type: ignore[arg-type]


def diff_listing(accepted: list[BlobInfo], lineage: pl.DataFrame) -> Delta:
    """Split a validated listing into new and changed blobs; blobs the lineage holds unchanged are left out."""
    latest = lineage.sort("version").unique("blob_name", keep="last")
    known = {name: (etag, size) for name, etag, size in latest.select("blob_name", "etag", "size").iter_rows()}
    new = [b for b in accepted if b.name not in known]
    changed = [b for b in accepted if b.name in known and known[b.name] != (b.etag, b.size)]
    return Delta(new=new, changed=changed)


def same_storage(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two storage descriptors name the same folder or container and prefix."""
    return all(a.get(k) == b.get(k) for k in STORAGE_KEYS)


def find_target(root: Path, descriptor: dict[str, Any]) -> DatasetRecord | None:
    """The Completed dataset curated from this storage (a versioned one first, then the newest); None if none."""
    found = [
        r for r in registry.list_records(root)
        if r.status == Status.COMPLETED and r.original_dataset is None and same_storage(r.storage, descriptor)
    ]
    return max(found, key=lambda r: (r.version or 0, r.created)) if found else None


def register_staging(root: Path, target: DatasetRecord, blobs: list[BlobInfo], version: int) -> DatasetRecord:
    """Register the hidden dataset that curates a version's delta; leftovers of crashed runs are erased first."""
    drop_staging(root, target.id)
    counts = Counts(found=len(blobs), accepted=len(blobs))
    record = registry.register(
        root, f"{target.name} (v{version} staging)", parent_id=target.id, storage=target.storage, counts=counts
    )
    listing = pa.table({"name": [b.name for b in blobs], "size": [b.size for b in blobs]})
    write_table(dataset_paths(root, record.id).listing, listing)
    return record


def drop_staging(root: Path, target_id: str, staging_id: str | None = None) -> list[str]:
    """Erase the target's staging datasets (or just `staging_id`); returns their ids."""
    dropped = []
    for record in registry.list_records(root, include_staging=True):
        if record.parent_id == target_id and staging_id in (None, record.id):
            shutil.rmtree(dataset_paths(root, record.id).dir, ignore_errors=True)
            dropped.append(record.id)
    return dropped


def adopt_curation(root: Path, record: DatasetRecord) -> dict[str, Any] | None:
    """Make a dataset that curate-dataset made version 1: its registered listing and change tokens become the lineage.

    Returns the manifest entry, or None when there is nothing to adopt (a lineage exists, or the listing was
    registered before change tokens were kept: then the first incremental run redoes every image once)."""
    paths = dataset_paths(root, record.id)
    if paths.lineage.exists() or not paths.listing.exists() or not paths.files.exists():
        return None
    listing = pq.read_table(paths.listing)
    if "etag" not in listing.column_names:
        return None
    blobs = [BlobInfo(r["name"], r["size"], r["etag"]) for r in listing.to_pylist()]
    files = pl.read_parquet(paths.files)
    now, run = now_utc(), record.flow_run_id or "unknown"
    rows = lineage_rows(files, blobs, 1, run, now)
    entry = version_entry(Delta(new=blobs, changed=[]), rows, files, 1, run, now) | {"adopted": True}
    write_text_atomic(paths.versions, json.dumps([entry], indent=2, default=str))
    write_table(paths.lineage, rows.to_arrow().cast(LINEAGE_SCHEMA))  # the commit point, last
    registry.update(root, record.id, version=1)
    return entry


def is_retried(error: str | None, width: int | None) -> bool:
    """A failed image is retried by the next run unless its bytes were read and do not decode."""
    return error is not None and (width is not None or error.startswith("cannot read"))


def lineage_rows(files: pl.DataFrame, blobs: list[BlobInfo], version: int, flow_run_id: str, now: datetime) -> pl.DataFrame:
    """Lineage rows for a version: its blobs whose files row succeeded or does not decode."""
    by_id = {r["image_id"]: r for r in files.select("image_id", "error", "width").iter_rows(named=True)}
    rows = []
    for blob in blobs:
        row = by_id.get(image_id_for(blob.name))
        if row is None or is_retried(row["error"], row["width"]):
            continue
        rows.append({"image_id": image_id_for(blob.name), "blob_name": blob.name, "etag": blob.etag, "size": blob.size,
                     "version": version, "flow_run_id": flow_run_id, "added_at": now, "error": row["error"]})
    return pl.from_arrow(pa.Table.from_pylist(rows, schema=LINEAGE_SCHEMA))  # type: ignore[return-value]


def _cast(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    loose = frame.select(schema.names).to_arrow().cast(pa.schema([f.with_nullable(True) for f in schema]))
    return pa.Table.from_arrays(loose.columns, schema=schema)


def _shard_version(name: str) -> int:
    match = _VERSION_SHARD.match(name)
    return int(match.group(1)) if match else 0  # a shard of the dataset's first curation


def build_version(root: Path, target_id: str, staging_id: str, version: int) -> dict[str, Any]:
    """Turn the curated staging folder into the whole next version of the target (see the module docstring).

    Returns:
        images (rows of the new version) and orphans: thumbnails of replaced images, to delete after the commit.
    Raises:
        RuntimeError: the staging dataset wrote no results (its failure reason is quoted).
    """
    t, s = dataset_paths(root, target_id), dataset_paths(root, staging_id)
    if not s.files.exists():
        reason = registry.load(root, staging_id).failure_reason or "no results were written"
        raise RuntimeError(f"version {version} not added: the delta's curation failed: {reason}")
    delta = pl.read_parquet(s.files)
    moved: dict[str, str] = {}
    for image_id, thumb in delta.select("image_id", "thumbnail").iter_rows():
        if thumb is not None:
            dst = t.versioned_thumbnail(image_id, version)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(Path(root) / thumb, dst)
            moved[image_id] = dst.relative_to(root).as_posix()
    replaced = set(delta["image_id"])

    def rethumb(table: pa.Table) -> pa.Table:
        column = pa.array([moved.get(i) for i in table.column("image_id").to_pylist()], pa.string())
        return table.set_column(table.schema.get_field_index("thumbnail"), pa.field("thumbnail", pa.string()), column)

    staged = sorted(s.work.glob("thumbnails-*.parquet"))
    for i, shard in enumerate(staged):
        write_table(s.version_shard(version, i), rethumb(pq.read_table(shard)))
        shard.unlink()
    for shard in sorted(t.work.glob("thumbnails-*.parquet")):
        if _shard_version(shard.name) >= version:
            continue  # a leftover of a crashed, uncommitted merge: published over or removed by publish_version
        table = pq.read_table(shard)
        keep = pa.array([i not in replaced for i in table.column("image_id").to_pylist()], pa.bool_())
        write_table(s.work / shard.name, table.filter(keep))

    old = pl.read_parquet(t.files)
    orphans = [o for o in old.filter(pl.col("image_id").is_in(replaced))["thumbnail"].drop_nulls().to_list()
               if o not in set(moved.values())]  # a redone, uncommitted version reuses its thumbnails' names
    files = pl.concat([old.filter(~pl.col("image_id").is_in(replaced)), pl.from_arrow(rethumb(pq.read_table(s.files)))], how="diagonal_relaxed")
    write_table(s.files, _cast(files, FILES_SCHEMA))
    meta_schema = pq.read_schema(t.metadata)
    old_meta = pl.read_parquet(t.metadata).filter(~pl.col("image_id").is_in(replaced))
    write_table(s.metadata, _cast(pl.concat([old_meta, pl.read_parquet(s.metadata)], how="diagonal_relaxed"), meta_schema))
    _merge_embeddings(t, s, replaced, version)
    return {"images": files.height, "orphans": orphans}


def _merge_embeddings(t: DatasetPaths, s: DatasetPaths, replaced: set[str], version: int) -> None:
    """The target's embeddings minus replaced images plus the delta's; the 3D layout is recomputed for all."""
    parts = [pl.read_parquet(t.embeddings, columns=["image_id", "embedding"]).filter(~pl.col("image_id").is_in(replaced))]
    parts.append(pl.read_parquet(s.embeddings, columns=["image_id", "embedding"]))
    parts = [p for p in parts if p.height]
    dims = {p["embedding"].dtype.size for p in parts}  # type: ignore[attr-defined]
    if len(dims) > 1:
        raise RuntimeError(f"version {version} not added: its embeddings have {dims} dimensions (another model?)")
    ids = [i for p in parts for i in p["image_id"].to_list()]
    matrix = np.vstack([p["embedding"].to_numpy() for p in parts]).astype(np.float32) if parts else np.zeros((0, 1))
    write_embeddings(s, ids, matrix)


def publish_version(root: Path, target_id: str, staging_id: str) -> None:
    """Rename the finished version's shards and tables over the target's: the dataset switches to it."""
    t, s = dataset_paths(root, target_id), dataset_paths(root, staging_id)
    shards = {p.name for p in s.work.glob("thumbnails-*.parquet")}
    for name in sorted(shards):
        os.replace(s.work / name, t.work / name)
    for shard in t.work.glob("thumbnails-*.parquet"):
        if shard.name not in shards:
            shard.unlink()
    # files last: readers start from files and left-join the rest, so meanwhile they see the previous image list.
    for name in ("analytics", "sampling", "sampling_report", "embeddings", "metadata", "files"):
        if getattr(s, name).exists():
            os.replace(getattr(s, name), getattr(t, name))


def commit_version(
    root: Path, target_id: str, rows: pl.DataFrame, entry: dict[str, Any], report: ValidationReport
) -> DatasetRecord:
    """Append the version's lineage rows (the commit point), then its manifest entry; update the record's counts."""
    paths = dataset_paths(root, target_id)
    lineage = pl.concat([read_lineage(paths), rows])
    write_table(paths.lineage, lineage.to_arrow().cast(LINEAGE_SCHEMA))
    versions = [v for v in read_versions(paths) if v["version"] != entry["version"]] + [entry]
    write_text_atomic(paths.versions, json.dumps(versions, indent=2, default=str))
    errors = pl.read_parquet(paths.files, columns=["error"])["error"]
    counts = Counts(found=report.found, accepted=len(errors), rejected=report.rejected,
                    processed=errors.null_count(), failed=len(errors) - errors.null_count())
    return registry.update(root, target_id, version=entry["version"], counts=counts)


def version_entry(delta: Delta, rows: pl.DataFrame, files: pl.DataFrame, version: int, flow_run_id: str, now: datetime) -> dict[str, Any]:
    """The manifest entry: images added and changed successfully, delta images that failed, images in the dataset."""
    ok = set(rows.filter(pl.col("error").is_null())["blob_name"])
    delta_ids = {image_id_for(b.name) for b in delta.blobs}
    failed = files.filter(pl.col("image_id").is_in(delta_ids) & pl.col("error").is_not_null()).height
    return {"version": version, "flow_run_id": flow_run_id, "created": now.isoformat(),
            "added": sum(b.name in ok for b in delta.new), "changed": sum(b.name in ok for b in delta.changed),
            "failed": failed, "images": files.height}


def now_utc() -> datetime:
    return datetime.now(UTC)
