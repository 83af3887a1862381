"""Versions of an incrementally curated dataset: lineage, the diff of a listing against it, and merging a version in.

A dataset curated by `curate-new-blobs` keeps, beside its tables:

- the lineage table (LINEAGE_SCHEMA): one row per image a committed version curated: which blob (name, change
  token, size), which version and which Prefect flow run. It is what the next run diffs the listing against, so it
  is written LAST: the commit point of a version.
- the versions manifest: one entry per version (version, flow_run_id, created, added, changed, failed, retryable, images).

What counts as curated: an image that succeeded, or whose bytes do not decode (the same bytes would fail again; it
is retried once the blob changes). An image that failed to be read or tagged, or failed for a transient reason
(storage unreachable or throttled: `result_pages.is_retryable`), is not recorded, so the next run retries it.
`curation curate --resume ID` on a written dataset curates its retryable images the same way, as a version.

Adding version N never touches the dataset the viewer reads until it is complete. The delta is curated as a hidden
staging dataset (`parent_id` = the target); `build_version` then turns the staging folder into the whole version N
(the target's tables minus replaced rows plus the delta's, the layout recomputed, the target's shards minus
replaced rows plus the delta's under version-unique names, thumbnails moved to version-unique names), the flow
recomputes analytics and sampling there, and `publish_version` renames each finished file over the target's.
A crash before the lineage write leaves the lineage as it was: the next run sees the same blobs as missing and
redoes them, replacing their rows by image id, so nothing is doubled.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from curation.dataset.catalog import Catalog, DatasetStore, Document, Table
from curation.dataset.parquet_io import FILES_SCHEMA
from curation.dataset.registry import Counts, DatasetRecord, Status, now_utc
from curation.dataset.results import write_embeddings
from curation.inference.result_pages import RETRYABLE, is_retryable
from curation.ingest.ids import image_id_for
from curation.ingest.storage import BlobInfo
from curation.ingest.validation import ValidationReport

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


def read_lineage(store: DatasetStore) -> pl.DataFrame:
    """The dataset's lineage; empty (with its schema) before the first version."""
    table = store.read(Table.LINEAGE) if store.has(Table.LINEAGE) else LINEAGE_SCHEMA.empty_table()
    return pl.from_arrow(table)  # type: ignore[return-value]


def read_versions(store: DatasetStore) -> list[dict[str, Any]]:
    """The versions manifest, oldest first."""
    return store.read_json(Document.VERSIONS) or []


def current_version(store: DatasetStore) -> int:
    """The last committed version (0 before the first): the lineage is the commit point."""
    lineage = read_lineage(store)
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


def find_target(catalog: Catalog, descriptor: dict[str, Any]) -> DatasetRecord | None:
    """The Completed dataset curated from this storage (a versioned one first, then the newest); None if none."""
    found = [
        r for r in catalog.records()
        if r.status == Status.COMPLETED and r.original_dataset is None and same_storage(r.storage, descriptor)
    ]
    return max(found, key=lambda r: (r.version or 0, r.created)) if found else None


def register_staging(catalog: Catalog, target: DatasetRecord, blobs: list[BlobInfo], version: int) -> DatasetRecord:
    """Register the hidden dataset that curates a version's delta; leftovers of crashed runs are erased first."""
    drop_staging(catalog, target.id)
    counts = Counts(found=len(blobs), accepted=len(blobs))
    record = catalog.register(
        f"{target.name} (v{version} staging)", parent_id=target.id, storage=target.storage, counts=counts
    )
    listing = pa.table({"name": [b.name for b in blobs], "size": [b.size for b in blobs]})
    catalog.dataset(record.id).write(Table.LISTING, listing)
    return record


def drop_staging(catalog: Catalog, target_id: str, staging_id: str | None = None) -> list[str]:
    """Erase the target's staging datasets (or just `staging_id`); returns their ids."""
    dropped = []
    for record in catalog.records(include_staging=True):
        if record.parent_id == target_id and staging_id in (None, record.id):
            catalog.dataset(record.id).erase()
            dropped.append(record.id)
    return dropped


def adopt_curation(store: DatasetStore) -> dict[str, Any] | None:
    """Make a dataset that curate-dataset made version 1: its registered listing and change tokens become the lineage.

    Returns the manifest entry, or None when there is nothing to adopt (a lineage exists, or the listing was
    registered before change tokens were kept: then the first incremental run redoes every image once)."""
    if store.has(Table.LINEAGE) or not store.has(Table.LISTING) or not store.has(Table.FILES):
        return None
    listing = store.read(Table.LISTING)
    if "etag" not in listing.column_names:
        return None
    blobs = [BlobInfo(r["name"], r["size"], r["etag"]) for r in listing.to_pylist()]
    files = store.frame(Table.FILES)
    now, run = now_utc(), store.load_record().flow_run_id or "unknown"
    rows = lineage_rows(files, blobs, 1, run, now)
    entry = version_entry(Delta(new=blobs, changed=[]), rows, files, 1, run, now) | {"adopted": True}
    store.write_json(Document.VERSIONS, [entry])
    store.write(Table.LINEAGE, rows.to_arrow().cast(LINEAGE_SCHEMA))  # the commit point, last
    store.update_record(version=1)
    return entry


def is_retried(error: str | None, width: int | None) -> bool:
    """A failed image is retried by the next run unless its bytes were read and do not decode; one that failed for
    a transient reason (result_pages.is_retryable) always is."""
    return error is not None and (width is not None or error.startswith("cannot read") or is_retryable(error))


def retryable_blobs(store: DatasetStore) -> list[BlobInfo]:
    """The blobs of a written dataset whose images failed for a transient reason, with their registered change
    tokens (None when the listing kept none)."""
    if not store.has(Table.FILES):
        return []
    files = store.frame(Table.FILES, columns=["blob_name", "size", "error"])
    files = files.filter(pl.col("error").str.starts_with(RETRYABLE))
    tokens: dict[str, str | None] = {}
    if files.height and store.has(Table.LISTING):
        listing = store.read(Table.LISTING)
        if "etag" in listing.column_names:
            tokens = dict(zip(listing["name"].to_pylist(), listing["etag"].to_pylist(), strict=True))
    return [BlobInfo(name, size, tokens.get(name)) for name, size in files.select("blob_name", "size").iter_rows()]


def lineage_rows(
    files: pl.DataFrame, blobs: list[BlobInfo], version: int, flow_run_id: str, now: datetime
) -> pl.DataFrame:
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


def build_version(target: DatasetStore, staging: DatasetStore, version: int) -> dict[str, Any]:
    """Turn the curated staging folder into the whole next version of the target (see the module docstring).

    Returns:
        images (rows of the new version) and orphans: thumbnails of replaced images, to delete after the commit.
    Raises:
        RuntimeError: the staging dataset wrote no results (its failure reason is quoted).
    """
    t, s = target, staging
    if not s.has(Table.FILES):
        reason = s.load_record().failure_reason or "no results were written"
        raise RuntimeError(f"version {version} not added: the delta's curation failed: {reason}")
    delta = s.frame(Table.FILES)
    moved: dict[str, str] = {}
    for image_id, thumb in delta.select("image_id", "thumbnail").iter_rows():
        if thumb is not None:
            moved[image_id] = t.adopt_thumbnail(thumb, image_id, version)
    replaced = set(delta["image_id"])

    def rethumb(table: pa.Table) -> pa.Table:
        column = pa.array([moved.get(i) for i in table.column("image_id").to_pylist()], pa.string())
        return table.set_column(table.schema.get_field_index("thumbnail"), pa.field("thumbnail", pa.string()), column)

    for i, shard in enumerate(s.files_shards()):
        s.write_version_shard(version, i, rethumb(pq.read_table(shard)))
        s.remove_shard(shard)
    for shard in t.files_shards():
        if t.shard_version(shard) >= version:
            continue  # a leftover of a crashed, uncommitted merge: published over or removed by publish_version
        table = pq.read_table(shard)
        keep = pa.array([i not in replaced for i in table.column("image_id").to_pylist()], pa.bool_())
        s.carry_shard(shard, table.filter(keep))

    old = t.frame(Table.FILES)
    orphans = [o for o in old.filter(pl.col("image_id").is_in(replaced))["thumbnail"].drop_nulls().to_list()
               if o not in set(moved.values())]  # a redone, uncommitted version reuses its thumbnails' names
    files = pl.concat([old.filter(~pl.col("image_id").is_in(replaced)), pl.from_arrow(rethumb(s.read(Table.FILES)))],
                      how="diagonal_relaxed")
    s.write(Table.FILES, _cast(files, FILES_SCHEMA))
    meta_schema = t.schema(Table.METADATA)
    old_meta = t.frame(Table.METADATA).filter(~pl.col("image_id").is_in(replaced))
    merged_meta = pl.concat([old_meta, s.frame(Table.METADATA)], how="diagonal_relaxed")
    s.write(Table.METADATA, _cast(merged_meta, meta_schema))
    _merge_embeddings(t, s, replaced, version)
    return {"images": files.height, "orphans": orphans}


def _merge_embeddings(t: DatasetStore, s: DatasetStore, replaced: set[str], version: int) -> None:
    """The target's embeddings minus replaced images plus the delta's; the 3D layout is recomputed for all."""
    columns = ["image_id", "embedding"]
    parts = [t.frame(Table.EMBEDDINGS, columns=columns).filter(~pl.col("image_id").is_in(replaced))]
    parts.append(s.frame(Table.EMBEDDINGS, columns=columns))
    parts = [p for p in parts if p.height]
    dims = {p["embedding"].dtype.size for p in parts}  # type: ignore[attr-defined]
    if len(dims) > 1:
        raise RuntimeError(f"version {version} not added: its embeddings have {dims} dimensions (another model?)")
    ids = [i for p in parts for i in p["image_id"].to_list()]
    matrix = np.vstack([p["embedding"].to_numpy() for p in parts]).astype(np.float32) if parts else np.zeros((0, 1))
    write_embeddings(s, ids, matrix)


def publish_version(target: DatasetStore, staging: DatasetStore) -> None:
    """Rename the finished version's shards and tables over the target's: the dataset switches to it."""
    target.replace_shards_from(staging)
    # files last: readers start from files and left-join the rest, so meanwhile they see the previous image list.
    for item in (Table.ANALYTICS, Table.SAMPLING, Document.SAMPLING_REPORT, Table.EMBEDDINGS, Table.METADATA,
                 Table.FILES):
        target.move_from(staging, item)


def commit_version(
    store: DatasetStore,
    rows: pl.DataFrame,
    entry: dict[str, Any],
    report: ValidationReport,
    orphans: Iterable[str] = (),
) -> DatasetRecord:
    """Append the version's lineage rows (the commit point), then its manifest entry; update the record's counts
    and delete the thumbnails of replaced images (`orphans`: no committed table names them any more)."""
    lineage = pl.concat([read_lineage(store), rows])
    store.write(Table.LINEAGE, lineage.to_arrow().cast(LINEAGE_SCHEMA))
    versions = [v for v in read_versions(store) if v["version"] != entry["version"]] + [entry]
    store.write_json(Document.VERSIONS, versions)
    errors = store.frame(Table.FILES, columns=["error"])["error"]
    counts = Counts(found=report.found, accepted=len(errors), rejected=report.rejected,
                    processed=errors.null_count(), failed=len(errors) - errors.null_count(),
                    retryable=int(errors.str.starts_with(RETRYABLE).sum()))
    record = store.update_record(version=entry["version"], counts=counts)
    store.remove_thumbnails(orphans)
    return record


def version_entry(
    delta: Delta, rows: pl.DataFrame, files: pl.DataFrame, version: int, flow_run_id: str, now: datetime
) -> dict[str, Any]:
    """The manifest entry: images added and changed successfully, delta images that failed, images in the dataset."""
    ok = set(rows.filter(pl.col("error").is_null())["blob_name"])
    delta_ids = {image_id_for(b.name) for b in delta.blobs}
    failed = files.filter(pl.col("image_id").is_in(delta_ids) & pl.col("error").is_not_null())
    return {"version": version, "flow_run_id": flow_run_id, "created": now.isoformat(),
            "added": sum(b.name in ok for b in delta.new), "changed": sum(b.name in ok for b in delta.changed),
            "failed": failed.height, "retryable": int(failed["error"].str.starts_with(RETRYABLE).sum()),
            "images": files.height}
