"""Parquet tables of a dataset: explicit schemas, atomic writes, row groups."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.dataset.atomic import atomic_path
from curation.taxonomy import CATEGORIES

FILES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("blob_name", pa.string(), nullable=False),
        pa.field("size", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("format", pa.string()),
        pa.field("thumbnail", pa.string()),  # relative to the data root; null when the image did not decode
        pa.field("error", pa.string()),  # null on success
        pa.field("content_hash", pa.string()),  # SHA-256 of the bytes, for exact duplicates
    ]
)


def shard_schema(signal_names: Iterable[str]) -> pa.Schema:
    """A thumbnail shard (work/): the files columns plus the perceptual hash and quality signals of each image."""
    fields = list(FILES_SCHEMA) + [pa.field("phash", pa.int64())]
    fields += [pa.field(name, pa.float64()) for name in signal_names if name != "phash"]
    return pa.schema(fields)


def metadata_schema(categories: Iterable[str] = CATEGORIES) -> pa.Schema:
    """One string column per category (null means None) plus its float32 confidence."""
    fields = [pa.field("image_id", pa.string(), nullable=False)]
    for category in categories:
        fields += [pa.field(category, pa.string()), pa.field(f"{category}_confidence", pa.float32())]
    return pa.schema(fields)


def embeddings_schema(dim: int) -> pa.Schema:
    """The embedding as a fixed-size list of float32, plus its 3D layout."""
    return pa.schema(
        [
            pa.field("image_id", pa.string(), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), dim)),
            pa.field("x", pa.float32()),
            pa.field("y", pa.float32()),
            pa.field("z", pa.float32()),
        ]
    )


def write_table(path: Path, table: pa.Table, row_group_size: int = 64_000) -> None:
    """Write a table atomically: readers never see a half-written file."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


class RowGroupWriter:
    """Appends batches to one Parquet file, flushing a row group every `row_group_size` rows.

    Memory holds at most one row group's worth of rows, whatever the file's length."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, row_group_size: int) -> None:
        self._writer, self.schema, self._size = writer, schema, row_group_size
        self._pending: list[pa.Table] = []
        self._rows = 0
        self.rows_written = 0

    def write(self, table: pa.Table) -> None:
        """Append rows (a table with the writer's columns; cast to its schema)."""
        if table.num_rows:
            self._pending.append(table.select(self.schema.names).cast(self.schema))
            self._rows += table.num_rows
        if self._rows >= self._size:
            self.flush(whole_groups_only=True)

    def write_rows(self, rows: list[dict[str, object]]) -> None:
        """Append rows given as dicts."""
        self.write(rows_to_table(rows, self.schema))

    def flush(self, whole_groups_only: bool = False) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        cut = (table.num_rows // self._size) * self._size if whole_groups_only else table.num_rows
        if cut:
            self._writer.write_table(table.slice(0, cut), row_group_size=self._size)
            self.rows_written += cut
        rest = table.slice(cut)
        self._pending, self._rows = ([rest] if rest.num_rows else []), rest.num_rows


@contextmanager
def streaming_writer(path: Path, schema: pa.Schema, row_group_size: int = 64_000) -> Iterator[RowGroupWriter]:
    """A RowGroupWriter on a temporary name, renamed over `path` only when the block ends without an error."""
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            rows = RowGroupWriter(writer, schema, row_group_size)
            yield rows
            rows.flush()


def rows_to_table(rows: list[dict[str, object]], schema: pa.Schema) -> pa.Table:
    """A table with exactly the schema's columns and types."""
    return pa.Table.from_pylist(rows, schema=schema)


def read_table(path: Path) -> pa.Table:
    return pq.read_table(path)
