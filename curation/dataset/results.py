"""Turning the service's per-image results and the thumbnail shards into the dataset's Parquet files."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation.analysis.layout import layout_3d
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.parquet_io import FILES_SCHEMA, embeddings_schema, metadata_schema
from curation.inference import result_pages
from curation.taxonomy import Taxonomy


@dataclass(frozen=True)
class WrittenCounts:
    images: int
    failed: int
    retryable: int = 0  # of the failed: a transient cause (result_pages.is_retryable)


NO_RESULT = f"{result_pages.RETRYABLE}no result from the inference service"
ROW_GROUP_ROWS = 64_000


class _Embeddings:
    """Embeddings gathered page by page into one preallocated float32 matrix (no per-float Python objects)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.ids, self.matrix = capacity, [], None

    def add(self, image_ids: list[str], block: np.ndarray) -> None:
        if self.matrix is None:
            self.matrix = np.empty((self.capacity, block.shape[1]), dtype=np.float32)
        self.matrix[len(self.ids) : len(self.ids) + len(block)] = block
        self.ids += image_ids

    def collected(self) -> np.ndarray:
        return np.zeros((0, 0), dtype=np.float32) if self.matrix is None else self.matrix[: len(self.ids)]


Page = pa.Table | pa.RecordBatch | list[dict[str, Any]]


def _as_table(page: Page) -> pa.Table:
    """An Arrow result page (curation.inference.result_pages) as a table; JSON items are converted."""
    if isinstance(page, pa.RecordBatch):
        return pa.Table.from_batches([page])
    return page if isinstance(page, pa.Table) else result_pages.from_items(page)


def _metadata_columns(page: pa.Table, schema: pa.Schema) -> pa.Table:
    """The metadata columns of accepted rows: a failed image's tags are null; a category the page lacks is null."""
    failed = pc.is_valid(page["error"])
    columns = [page["image_id"]]
    for field in list(schema)[1:]:
        column = page[field.name] if field.name in page.column_names else pa.nulls(page.num_rows, field.type)
        columns.append(pc.if_else(failed, pa.scalar(None, field.type), column.cast(field.type)))
    return pa.Table.from_arrays(columns, schema=schema)


def _vectors(page: pa.Table) -> tuple[list[str], np.ndarray | None]:
    """Ids and float32 matrix of the rows that have an embedding and no error, straight from the Arrow buffers."""
    if "embedding" not in page.column_names:
        return [], None
    rows = page.filter(pc.and_(pc.is_valid(page["embedding"]), pc.is_null(page["error"])))
    if not rows.num_rows:
        return [], None
    column = rows["embedding"].combine_chunks()
    dim = column.type.list_size
    return rows["image_id"].to_pylist(), column.flatten().to_numpy().reshape(-1, dim)


def write_results(
    store: DatasetStore, pages: Iterable[Page], taxonomy: Taxonomy, row_group_size: int = ROW_GROUP_ROWS
) -> WrittenCounts:
    """Write files, metadata and embeddings Parquet from result pages; every accepted image gets a row.

    Pages are Arrow tables in curation.inference.result_pages' schema (`InferenceClient.iter_result_tables`), or JSON
    items (`iter_results`). An image's error is the thumbnail (decode) error or the service's error; such an image has
    None tags and no embedding row, and never fails the dataset. A repeated result (a retried page) is written
    once and an id the dataset does not hold not at all. Pages are consumed one at a time and metadata and files
    are written in row groups of `row_group_size`, so memory holds one page, one row group, the embeddings as one
    float32 matrix and the image ids, whatever the dataset's size.
    """
    order = [i for shard in store.iter_files_shards(["image_id"]) for i in shard["image_id"].to_pylist()]
    known = set(order)
    seen: set[str] = set()
    errors: dict[str, str] = {}
    embeddings = _Embeddings(len(known))
    schema = metadata_schema(taxonomy.categories)
    with store.writer(Table.METADATA, schema, row_group_size) as metadata:
        for page in pages:
            table = _as_table(page)
            keep = []
            for row, image_id in enumerate(table["image_id"].to_pylist()):
                if image_id in known and image_id not in seen:  # a repeated result is written once, unknown never
                    seen.add(image_id)
                    keep.append(row)
            table = table.take(keep) if len(keep) < table.num_rows else table
            del page
            failed = table.filter(pc.is_valid(table["error"]))
            errors.update(zip(failed["image_id"].to_pylist(), failed["error"].to_pylist(), strict=True))
            metadata.write(_metadata_columns(table, schema))
            ids, block = _vectors(table)
            if block is not None:
                embeddings.add(ids, block)
        missing = pa.array([i for i in order if i not in seen], pa.string())
        unanswered = pa.table({"image_id": missing, "error": pa.nulls(len(missing), pa.string())})
        metadata.write(_metadata_columns(unanswered, schema))
    del order, known
    write_embeddings(store, embeddings.ids, embeddings.collected())
    images = failed_count = retryable = 0
    with store.writer(Table.FILES, FILES_SCHEMA, row_group_size) as files:
        for shard in store.iter_files_shards(FILES_SCHEMA.names):
            table = shard.cast(FILES_SCHEMA)
            merged = [
                error or (errors.get(i) if i in seen else NO_RESULT)
                for i, error in zip(table["image_id"].to_pylist(), table["error"].to_pylist())
            ]
            images += table.num_rows
            failed_count += sum(e is not None for e in merged)
            retryable += sum(map(result_pages.is_retryable, merged))
            column = FILES_SCHEMA.get_field_index("error")
            files.write(table.set_column(column, FILES_SCHEMA.field("error"), pa.array(merged, pa.string())))
    return WrittenCounts(images=images, failed=failed_count, retryable=retryable)


def write_embeddings(store: DatasetStore, ids: list[str], matrix: np.ndarray) -> None:
    """Embeddings as fixed-size float32 lists plus the 3D layout."""
    dim = matrix.shape[1] if matrix.ndim == 2 and matrix.size else 0
    xyz = layout_3d(matrix) if dim else np.zeros((0, 3), dtype=np.float32)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    table = pa.table(
        {
            "image_id": pa.array(ids, pa.string()),
            "embedding": (
                pa.FixedSizeListArray.from_arrays(flat, dim) if dim else pa.array([], pa.list_(pa.float32(), 1))
            ),
            "x": xyz[:, 0],
            "y": xyz[:, 1],
            "z": xyz[:, 2],
        },
        schema=embeddings_schema(max(dim, 1)),
    )
    store.write(Table.EMBEDDINGS, table)
