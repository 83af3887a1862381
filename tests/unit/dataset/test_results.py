"""Results are streamed: pages are consumed one at a time and the tables are written in row groups."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.parquet_io import FILES_SCHEMA, rows_to_table, shard_schema, streaming_writer
from curation.dataset.results import NO_RESULT, write_results
from curation.inference.thumbnails import signal_names
from curation.taxonomy import DEFAULT_TAXONOMY

DATASET = "0123456789abcdef01234567"
N = 40
DIM = 6


class Item(dict):
    """A result item that can be watched with a weak reference."""


class Vector(list):
    """An embedding that can be watched with a weak reference."""


def _shards(root: Path) -> list[str]:
    store = DatasetStore(root, DATASET)
    ids = [f"{i:016x}" for i in range(N)]
    schema = shard_schema(signal_names())
    for shard, start in enumerate(range(0, N, 16)):
        rows = [
            {"image_id": i, "blob_name": f"img{i}.jpg", "size": 100, "width": 64, "height": 48, "format": "jpeg",
             "thumbnail": f"t/{i}.jpg", "error": "cannot decode" if i == ids[3] else None, "content_hash": i}
            for i in ids[start : start + 16]
        ]
        store.write_files_shard(shard, rows_to_table(rows, schema))
    return ids


def _result(image_id: str, row: int) -> Item:
    if row == 5:
        return Item(image_id=image_id, tags=None, embedding=None, error="HTTP 404")
    tags = {"time": {"label": "day", "confidence": 0.9}, "weather": {"label": None, "confidence": 0.2}}
    return Item(image_id=image_id, tags=tags, embedding=Vector(np.eye(DIM)[row % DIM].tolist()), error=None)


def test_pages_are_not_retained_and_tables_are_written_in_row_groups(tmp_path: Path) -> None:
    ids = _shards(tmp_path)
    answered = [i for r, i in enumerate(ids) if r != 7]  # image 7 never gets a result
    pages = [[_result(i, ids.index(i)) for i in answered[k : k + 8]] for k in range(0, len(answered), 8)]
    pages[2].append(_result(ids[0], 0))  # a repeated result (a retried page)
    watched: list[list[weakref.ref]] = []
    alive_when_yielding: list[int] = []

    def stream() -> Iterator[list[dict]]:
        while pages:
            page = pages.pop(0)  # the generator then holds the only reference to the page
            gc.collect()
            alive_when_yielding.append(sum(any(r() is not None for r in refs) for refs in watched))
            watched.append([weakref.ref(x) for item in page for x in (item, item["embedding"]) if x is not None])
            yield page
            del page

    store = DatasetStore(tmp_path, DATASET)
    written = write_results(store, stream(), DEFAULT_TAXONOMY, row_group_size=16)

    # at most the page being processed is still referenced when the next one is requested
    assert max(alive_when_yielding) <= 1
    assert written.images == N and written.failed == 3  # decode error, service error, no result

    groups = [pq.ParquetFile(store.table_path(t)).metadata.num_row_groups for t in (Table.FILES, Table.METADATA)]
    assert groups == [3, 3]
    files = store.frame(Table.FILES)
    assert files["image_id"].to_list() == ids and files.columns == FILES_SCHEMA.names
    errors = dict(zip(files["image_id"], files["error"]))
    assert errors[ids[3]] == "cannot decode" and errors[ids[5]] == "HTTP 404" and errors[ids[7]] == NO_RESULT
    assert sum(e is not None for e in errors.values()) == 3
    meta = store.frame(Table.METADATA)
    assert meta.height == N and meta["image_id"].n_unique() == N
    tagged = meta.filter(pl.col("image_id") == ids[1]).row(0, named=True)
    assert tagged["time"] == "day" and tagged["weather"] is None and tagged["time_confidence"] == pytest.approx(0.9)
    assert meta.filter(pl.col("image_id").is_in([ids[5], ids[7]]))["time"].null_count() == 2
    emb = store.frame(Table.EMBEDDINGS)
    assert sorted(emb["image_id"]) == sorted(set(ids) - {ids[5], ids[7]})
    vectors = np.asarray(emb["embedding"].to_list(), dtype=np.float32)
    expected = np.eye(DIM, dtype=np.float32)[[ids.index(i) % DIM for i in emb["image_id"]]]
    np.testing.assert_array_equal(vectors, expected)


def test_streaming_writer_flushes_whole_row_groups_and_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    with streaming_writer(target, FILES_SCHEMA, row_group_size=10) as out:
        for start in range(0, 37, 3):  # 13 small appends
            out.write_rows([{"image_id": f"{i}", "blob_name": f"b{i}"} for i in range(start, min(start + 3, 37))])
            assert out.rows_written % 10 == 0 and out.rows_written <= start + 3
    meta = pq.ParquetFile(target).metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [10, 10, 10, 7]
    assert pl.read_parquet(target)["image_id"].to_list() == [str(i) for i in range(37)]

    with pytest.raises(RuntimeError), streaming_writer(target, FILES_SCHEMA, row_group_size=10) as out:
        out.write_rows([{"image_id": "x", "blob_name": "y"}] * 25)
        raise RuntimeError("crash mid-write")
    assert pl.read_parquet(target).height == 37  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_arrow_pages_write_the_same_dataset_as_json_pages(tmp_path: Path) -> None:
    from polars.testing import assert_frame_equal

    from curation.inference.result_pages import from_items

    roots = {"json": tmp_path / "json", "arrow": tmp_path / "arrow"}
    ids = _shards(roots["json"])
    assert _shards(roots["arrow"]) == ids
    answered = [i for r, i in enumerate(ids) if r != 7]
    pages = [[_result(i, ids.index(i)) for i in answered[k : k + 8]] for k in range(0, len(answered), 8)]
    pages[2] += [_result(ids[0], 0), _result(ids[8], 5), _result("ffffffffffffffff", 2)]  # repeated x2 and unknown
    arrow_pages = [from_items(page) for page in pages]
    assert arrow_pages[2].num_rows == 11 and arrow_pages[2]["embedding"].type.list_size == DIM

    stores = {kind: DatasetStore(root, DATASET) for kind, root in roots.items()}
    counts = {kind: write_results(store, pages if kind == "json" else iter(arrow_pages), DEFAULT_TAXONOMY,
                                  row_group_size=16) for kind, store in stores.items()}
    assert counts["json"] == counts["arrow"] and counts["arrow"].images == N and counts["arrow"].failed == 3
    for table in (Table.FILES, Table.METADATA, Table.EMBEDDINGS):
        assert_frame_equal(stores["arrow"].frame(table), stores["json"].frame(table))
    meta = stores["arrow"].frame(Table.METADATA)
    assert meta["image_id"].to_list().count(ids[8]) == 1 and "ffffffffffffffff" not in meta["image_id"].to_list()
    assert meta.filter(pl.col("image_id") == ids[8])["time"].to_list() == ["day"]  # the first copy wins, not the error
    emb = stores["arrow"].frame(Table.EMBEDDINGS)
    assert emb.height == N - 2 and emb["image_id"].n_unique() == N - 2  # no row for the failed or unanswered image
    files = dict(stores["arrow"].frame(Table.FILES).select("image_id", "error").iter_rows())
    assert [files[ids[k]] for k in (3, 5, 7, 8)] == ["cannot decode", "HTTP 404", NO_RESULT, None]


def test_an_arrow_page_with_tags_on_a_failed_row_or_without_a_category_writes_nulls(tmp_path: Path) -> None:
    from curation.inference.result_pages import from_items

    ids = _shards(tmp_path)
    page = from_items([{"image_id": i, "tags": {"time": {"label": "day", "confidence": 0.9}}, "embedding": [1.0, k % 5],
                        "error": None} for k, i in enumerate(ids)])
    # the service never sends tags with an error; if one did, the error wins and the tags are dropped
    page = page.set_column(1, "error", pa.array(["HTTP 500"] + [None] * (N - 1), pa.string()))
    store = DatasetStore(tmp_path, DATASET)
    write_results(store, [page], DEFAULT_TAXONOMY)
    meta = store.frame(Table.METADATA)
    assert meta["time"].to_list() == [None] + ["day"] * (N - 1)
    assert meta["weather"].null_count() == N and meta["weather_confidence"].dtype == pl.Float32
    assert store.frame(Table.EMBEDDINGS).height == N - 1
