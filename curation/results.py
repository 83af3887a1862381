"""Turning the service's per-image results and the thumbnail shards into the dataset's Parquet files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.layout import layout_3d
from curation.parquet_io import FILES_SCHEMA, embeddings_schema, metadata_schema, rows_to_table, write_table
from curation.paths import DatasetPaths
from curation.taxonomy import Taxonomy


@dataclass(frozen=True)
class WrittenCounts:
    images: int
    failed: int


def _metadata_row(image_id: str, tags: dict[str, Any] | None, taxonomy: Taxonomy) -> dict[str, Any]:
    row: dict[str, Any] = {"image_id": image_id}
    for category in taxonomy.categories:
        tag = (tags or {}).get(category) or {}
        row[category] = tag.get("label")
        row[f"{category}_confidence"] = tag.get("confidence")
    return row


def read_thumbnail_shards(paths: DatasetPaths) -> pa.Table:
    """All thumbnail shards of a dataset as one files table (without inference errors yet)."""
    shards = sorted(paths.work.glob("thumbnails-*.parquet"))
    if not shards:
        return FILES_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(s, columns=FILES_SCHEMA.names).cast(FILES_SCHEMA) for s in shards])


def write_results(paths: DatasetPaths, pages: Iterable[list[dict[str, Any]]], taxonomy: Taxonomy) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from result pages; every accepted image gets a row.

    An image's error is the thumbnail (decode) error or the service's error; such an image has None tags
    and no embedding row, and never fails the dataset.
    """
    files = read_thumbnail_shards(paths).to_pylist()
    service_error: dict[str, str | None] = {}
    meta_rows: list[dict[str, Any]] = []
    ids: list[str] = []
    vectors: list[list[float]] = []
    for page in pages:
        for item in page:
            image_id = item["image_id"]
            if image_id in service_error:
                continue  # a repeated result (a retried page) is written once
            service_error[image_id] = item.get("error")
            meta_rows.append(_metadata_row(image_id, None if item.get("error") else item.get("tags"), taxonomy))
            if item.get("embedding") is not None and not item.get("error"):
                ids.append(image_id)
                vectors.append(item["embedding"])
    failed = 0
    for row in files:
        if row["image_id"] not in service_error:
            service_error[row["image_id"]] = "no result from the inference service"
            meta_rows.append(_metadata_row(row["image_id"], None, taxonomy))
        row["error"] = row["error"] or service_error[row["image_id"]]
        failed += row["error"] is not None
    known = {row["image_id"] for row in files}
    meta_rows = [r for r in meta_rows if r["image_id"] in known]
    write_table(paths.metadata, rows_to_table(meta_rows, metadata_schema(taxonomy.categories)))
    write_embeddings(paths, ids, np.asarray(vectors, dtype=np.float32))
    write_table(paths.files, rows_to_table(files, FILES_SCHEMA))
    return WrittenCounts(images=len(files), failed=failed)


def write_embeddings(paths: DatasetPaths, ids: list[str], matrix: np.ndarray) -> None:
    """Embeddings as fixed-size float32 lists plus the 3D layout."""
    dim = matrix.shape[1] if matrix.ndim == 2 and matrix.size else 0
    xyz = layout_3d(matrix) if dim else np.zeros((0, 3), dtype=np.float32)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, max(dim, 1)) if dim else pa.array([], pa.list_(pa.float32(), 1)),
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
        },
        schema=embeddings_schema(max(dim, 1)),
    )
    write_table(paths.embeddings, table)
