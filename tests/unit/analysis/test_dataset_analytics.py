"""analyse_dataset reads a written dataset and lines every image up with its own embedding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from curation.analysis.analyse import analyse_dataset
from curation.analysis.analytics import analyse
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.parquet_io import FILES_SCHEMA, rows_to_table, shard_schema
from curation.dataset.results import write_embeddings
from curation.inference.thumbnails import signal_names

DATASET = "89abcdef0123456789abcdef"


def test_vectors_follow_their_image_whatever_the_order_and_gaps(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    rng = np.random.default_rng(3)
    n = 40
    ids = [f"{i:016x}" for i in range(n)]
    names = [s for s in signal_names() if s != "phash"]
    shard_rows = [{"image_id": i, "blob_name": f"{i}.jpg", "size": 10, "width": 64, "height": 48, "format": "jpeg",
                   "thumbnail": f"t/{i}.jpg", "error": None, "content_hash": f"h{i}", "phash": int(r),
                   **{s: float(rng.uniform(0, 1)) for s in names}} for i, r in zip(ids, rng.integers(0, 2**40, n))]
    store.write_files_shard(0, rows_to_table(shard_rows, shard_schema(signal_names())))
    store.write(Table.FILES, rows_to_table([{k: r[k] for k in FILES_SCHEMA.names} for r in shard_rows], FILES_SCHEMA))
    vectors = rng.normal(size=(n, 12)).astype(np.float32)
    vectors[7] = vectors[30] + 1e-4  # 7 and 30: near duplicates, each other's nearest neighbour
    missing = {5, 19}
    order = [i for i in reversed(range(n)) if i not in missing]  # stored in another order, with gaps
    write_embeddings(store, [ids[i] for i in order], vectors[order])

    analyse_dataset(store, k=5)
    got = store.frame(Table.ANALYTICS)

    expected_matrix = vectors.copy()
    expected_matrix[list(missing)] = 0.0
    shards = pl.DataFrame(shard_rows)
    expected = analyse(ids, expected_matrix, content_hash=shards["content_hash"].to_list(),
                       phash=shards["phash"].to_list(), signals=shards.select(*names, "width", "height"), k=5)
    assert_frame_equal(got, expected, check_dtypes=False)
    assert got["image_id"].to_list() == ids
    assert got.filter(pl.col("image_id").is_in([ids[i] for i in missing]))["anomaly_score"].null_count() == 2
    assert got.row(7, named=True)["similar_ids"][0] == ids[30]
    assert got.row(7, named=True)["duplicate_group"] == got.row(30, named=True)["duplicate_group"] is not None


def test_embedding_matrix_in_file_order_is_used_as_is() -> None:
    from curation.analysis.analyse import _embedding_matrix

    vectors = np.arange(12, dtype=np.float32).reshape(4, 3)
    table = pl.DataFrame({"image_id": list("abcd"), "embedding": vectors}, schema_overrides={"embedding": pl.Array(pl.Float32, 3)})
    np.testing.assert_array_equal(_embedding_matrix(table, pl.Series([0, 1, 2, 3], dtype=pl.UInt32)), vectors)
    gaps = _embedding_matrix(table, pl.Series([3, None, 0], dtype=pl.UInt32))
    np.testing.assert_array_equal(gaps, np.stack([vectors[3], np.zeros(3, np.float32), vectors[0]]))
