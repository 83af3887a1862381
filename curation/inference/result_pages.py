"""Result pages as Arrow: the schema the service answers in and the client and `results.write_results` read.

A page is a table with one row per image: `image_id`, `error` (null on success), one string column per taxonomy
category (null means None) with its float32 `<category>_confidence` (the metadata Parquet's own columns, so the
writer selects them as they are), and `embedding` as a fixed-size list of float32 (null for a failed image).
Columns are built from whole arrays: an embedding never becomes Python floats on either side.

A page of a job submitted with a `thumbnail_side` also has the file columns after `embedding` (`file_fields`):
`content_hash` string, `width`, `height` int32, `format` string, `thumbnail` binary (the JPEG bytes; null when the
image did not decode), `phash` int64, then every other quality signal as float64, in the order of
curation.inference.thumbnails.signal_names(). A row without facts (the fetch failed) is null in all of them; an image that did
not decode has its content hash only. Thumbnails travel only in Arrow pages: JSON results never carry them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

ARROW_STREAM = "application/vnd.apache.arrow.stream"
# An image whose error starts with this failed for a transient reason (storage unreachable or throttled after the
# service's retries, or no result came back): a later run may succeed, so resume and curate-new-blobs process it again.
RETRYABLE = "retryable: "


def is_retryable(error: str | None) -> bool:
    """Whether an image's error is worth processing again later (see RETRYABLE)."""
    return error is not None and error.startswith(RETRYABLE)


class ResultLike(Protocol):
    """What the service keeps per image (curation.inference.service.jobs.ImageResult)."""

    image_id: str
    tags: dict[str, tuple[str | None, float]] | None
    embedding: np.ndarray | None
    error: str | None
    facts: dict[str, object] | None
    thumbnail: bytes | None


FILE_COLUMNS = ("content_hash", "width", "height", "format", "thumbnail")
_FILE_TYPES = {"content_hash": pa.string(), "width": pa.int32(), "height": pa.int32(), "format": pa.string(),
               "thumbnail": pa.binary(), "phash": pa.int64()}


def file_fields(signal_names: Sequence[str]) -> list[pa.Field]:
    """The file columns of a page with facts: FILE_COLUMNS, `phash` int64, then the other signals as float64."""
    names = [*FILE_COLUMNS, "phash", *(n for n in signal_names if n != "phash")]
    return [pa.field(name, _FILE_TYPES.get(name, pa.float64())) for name in names]


def page_schema(categories: Sequence[str], dim: int, signal_names: Sequence[str] | None = None) -> pa.Schema:
    """The columns of a result page (see the module docstring); with signal_names, the file columns too."""
    fields = [pa.field("image_id", pa.string(), nullable=False), pa.field("error", pa.string())]
    for category in categories:
        fields += [pa.field(category, pa.string()), pa.field(f"{category}_confidence", pa.float32())]
    fields.append(pa.field("embedding", pa.list_(pa.float32(), max(dim, 1))))
    return pa.schema(fields if signal_names is None else fields + file_fields(signal_names))


def _embedding_column(vectors: Sequence[Any | None], dim: int) -> pa.Array:
    """Fixed-size float32 lists from numpy vectors (or lists), null where there is none; one copy, no Python floats."""
    present = [v is not None for v in vectors]
    dim = max(dim, 1)
    matrix = np.zeros((len(vectors), dim), dtype=np.float32)
    if any(present):
        rows = np.flatnonzero(present)
        matrix[rows] = np.stack([np.asarray(vectors[r], dtype=np.float32).reshape(dim) for r in rows])
    mask = pa.array(np.logical_not(present), pa.bool_())
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), dim, mask=mask)


def _dim(vectors: Iterable[Any | None], default: int) -> int:
    return next((len(v) for v in vectors if v is not None), default)


def _tag_columns(
    tags: Sequence[dict[str, tuple[str | None, float]] | None], categories: Sequence[str]
) -> dict[str, pa.Array]:
    columns: dict[str, pa.Array] = {}
    for category in categories:
        pairs = [(t or {}).get(category) for t in tags]
        columns[category] = pa.array([p[0] if p else None for p in pairs], pa.string())
        columns[f"{category}_confidence"] = pa.array([p[1] if p else None for p in pairs], pa.float32())
    return columns


def _file_columns(results: Sequence[ResultLike], fields: list[pa.Field]) -> dict[str, pa.Array]:
    facts = [r.facts or {} for r in results]
    columns = {"thumbnail": pa.array([r.thumbnail for r in results], pa.binary())}
    for f in fields:
        if f.name not in columns:
            columns[f.name] = pa.array([row.get(f.name) for row in facts], f.type)
    return columns


def from_results(
    results: Sequence[ResultLike], categories: Sequence[str], dim: int, signal_names: Sequence[str] | None = None
) -> pa.Table:
    """A page from the service's result objects; a failed image has null tags and a null embedding.

    With signal_names (a job with a thumbnail side), the file columns follow (see the module docstring)."""
    ok = [r.error is None for r in results]
    vectors = [r.embedding if good else None for r, good in zip(results, ok, strict=True)]
    dim = _dim(vectors, dim)
    columns = {
        "image_id": pa.array([r.image_id for r in results], pa.string()),
        "error": pa.array([r.error for r in results], pa.string()),
        **_tag_columns([r.tags if good else None for r, good in zip(results, ok, strict=True)], categories),
        "embedding": _embedding_column(vectors, dim),
    }
    schema = page_schema(categories, dim, signal_names)
    if signal_names is not None:
        columns |= _file_columns(results, file_fields(signal_names))
    return pa.table(columns, schema=schema)


def from_items(items: Sequence[dict[str, Any]], categories: Sequence[str] | None = None) -> pa.Table:
    """A page from JSON result items (`{image_id, tags {category: {label, confidence}}, embedding, error}`).

    What a service that answers only JSON gives; categories default to those the items carry, in order.
    """
    if categories is None:
        categories = list(dict.fromkeys(c for item in items for c in (item.get("tags") or {})))
    pairs = [{c: (v.get("label"), v.get("confidence")) for c, v in (i.get("tags") or {}).items() if v} for i in items]
    tags = [None if item.get("error") else tag for item, tag in zip(items, pairs, strict=True)]
    vectors = [None if item.get("error") else item.get("embedding") for item in items]
    dim = _dim(vectors, 1)
    columns = {
        "image_id": pa.array([item["image_id"] for item in items], pa.string()),
        "error": pa.array([item.get("error") or None for item in items], pa.string()),
        **_tag_columns(tags, categories),
        "embedding": _embedding_column(vectors, dim),
    }
    return pa.table(columns, schema=page_schema(categories, dim))


def to_ipc(table: pa.Table) -> bytes:
    """An Arrow IPC stream (uncompressed: the pages travel on a loopback or a LAN, and CPU is what is short)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def from_ipc(data: bytes) -> pa.Table:
    """A table from an Arrow IPC stream; raises pa.ArrowInvalid for a cut or garbled body."""
    with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
        return reader.read_all()
