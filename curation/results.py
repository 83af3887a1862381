"""Turning the service's per-image results and the thumbnail shards into the dataset's Parquet files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.layout import layout_3d
from curation.parquet_io import FILES_SCHEMA, embeddings_schema, metadata_schema, streaming_writer, write_table
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


NO_RESULT = "no result from the inference service"
ROW_GROUP_ROWS = 64_000


class _Embeddings:
    """Embeddings gathered page by page into one preallocated float32 matrix (no per-float Python objects)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.ids, self.matrix = capacity, [], None

    def add(self, image_ids: list[str], vectors: list[list[float]]) -> None:
        block = np.asarray(vectors, dtype=np.float32)
        if self.matrix is None:
            self.matrix = np.empty((self.capacity, block.shape[1]), dtype=np.float32)
        self.matrix[len(self.ids) : len(self.ids) + len(block)] = block
        self.ids += image_ids

    def collected(self) -> np.ndarray:
        return np.zeros((0, 0), dtype=np.float32) if self.matrix is None else self.matrix[: len(self.ids)]


def write_results(
    paths: DatasetPaths, pages: Iterable[list[dict[str, Any]]], taxonomy: Taxonomy, row_group_size: int = ROW_GROUP_ROWS
) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from result pages; every accepted image gets a row.

    An image's error is the thumbnail (decode) error or the service's error; such an image has None tags
    and no embedding row, and never fails the dataset. Pages are consumed one at a time and metadata and files are
    written in row groups of `row_group_size`, so memory holds one page, one row group, the embeddings as one
    float32 matrix and the image ids, whatever the dataset's size.
    """
    shards = sorted(paths.work.glob("thumbnails-*.parquet"))
    order = [i for s in shards for i in pq.read_table(s, columns=["image_id"])["image_id"].to_pylist()]
    known = set(order)
    seen: set[str] = set()
    errors: dict[str, str] = {}
    embeddings = _Embeddings(len(known))
    with streaming_writer(paths.metadata, metadata_schema(taxonomy.categories), row_group_size) as metadata:
        for page in pages:
            rows, page_ids, vectors = [], [], []
            for item in page:
                image_id = item["image_id"]
                if image_id in seen or image_id not in known:
                    continue  # a repeated result (a retried page) is written once; an unknown id not at all
                seen.add(image_id)
                if item.get("error"):
                    errors[image_id] = item["error"]
                rows.append(_metadata_row(image_id, None if item.get("error") else item.get("tags"), taxonomy))
                if item.get("embedding") is not None and not item.get("error"):
                    page_ids.append(image_id)
                    vectors.append(item["embedding"])
            metadata.write_rows(rows)
            if vectors:
                embeddings.add(page_ids, vectors)
        metadata.write_rows([_metadata_row(i, None, taxonomy) for i in order if i not in seen])
    del order, known
    write_embeddings(paths, embeddings.ids, embeddings.collected())
    images = failed = 0
    with streaming_writer(paths.files, FILES_SCHEMA, row_group_size) as files:
        for shard in shards:
            table = pq.read_table(shard, columns=FILES_SCHEMA.names).cast(FILES_SCHEMA)
            merged = [
                error or (errors.get(i) if i in seen else NO_RESULT)
                for i, error in zip(table["image_id"].to_pylist(), table["error"].to_pylist())
            ]
            images += table.num_rows
            failed += sum(e is not None for e in merged)
            column = FILES_SCHEMA.get_field_index("error")
            files.write(table.set_column(column, FILES_SCHEMA.field("error"), pa.array(merged, pa.string())))
    return WrittenCounts(images=images, failed=failed)


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
