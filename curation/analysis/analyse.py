"""Whole-dataset analytics over a written dataset: reads its tables, runs curation.analysis.analytics, writes the
analytics table."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from curation.analysis.analytics import analyse, analytics_table, thresholds_for
from curation.analysis.quality import FLAGS
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.registry import DatasetNotFound
from curation.inference.thumbnails import signal_names


def _shards(store: DatasetStore) -> pl.DataFrame:
    """Every thumbnail shard as one frame: the content and perceptual hashes and quality signals of each image."""
    frames = [pl.from_arrow(t) for t in store.iter_files_shards()]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _embedding_matrix(embeddings: pl.DataFrame, rows: pl.Series) -> np.ndarray:
    """One float32 row per frame row (zeros where the image has no embedding), from the embeddings table."""
    dim = embeddings["embedding"].dtype.size if embeddings.height else 1  # type: ignore[attr-defined]
    vectors = np.asarray(embeddings["embedding"].to_numpy(), dtype=np.float32).reshape(embeddings.height, dim)
    index = rows.to_numpy()
    if rows.null_count() == 0 and len(index) == len(vectors) and (index == np.arange(len(index))).all():
        return vectors  # the usual case: every image has an embedding, in the same order
    matrix = np.zeros((len(rows), dim), dtype=np.float32)
    has = rows.is_not_null().to_numpy()
    matrix[has] = vectors[rows.drop_nulls().to_numpy()]
    return matrix


def _embedding_model(store: DatasetStore) -> str | None:
    try:
        return store.load_record().embedding_model
    except DatasetNotFound:  # analytics on bare Parquet files (no record): the default thresholds
        return None


def analyse_dataset(store: DatasetStore, k: int = 10) -> dict[str, Any]:
    """Anomaly scores, similar images, duplicate groups and quality flags for every image of the dataset.

    Pixels are not decoded again: quality signals, content hashes and perceptual hashes were measured when
    the thumbnails were made. Images that failed inference have no embedding; they still get quality flags.

    Returns:
        A summary: images, duplicate groups and images in them, and the number of images per quality flag.
    """
    files = store.frame(Table.FILES, columns=["image_id", "width", "height"])
    shards = _shards(store)
    embeddings = store.frame(Table.EMBEDDINGS, columns=["image_id", "embedding"])
    # The vectors are gathered once into the matrix analyse() gets and never joined into the frame, so no extra
    # copies of them are made on the way.
    frame = files.join(embeddings.select("image_id").with_row_index("embedding_row"), on="image_id", how="left",
                       maintain_order="left")
    if shards.height:
        wanted = dict.fromkeys(("content_hash", "phash", *signal_names()))  # ordered, without repeats
        extra = [c for c in wanted if c in shards.columns and c not in frame.columns]
        frame = frame.join(shards.select("image_id", *extra), on="image_id", how="left", maintain_order="left")
    matrix = _embedding_matrix(embeddings, frame["embedding_row"])
    del embeddings
    names = [c for c in signal_names() if c in frame.columns and c != "phash"]
    signals = frame.select(*names, "width", "height") if names else None
    result = analyse(
        frame["image_id"].to_list(),
        matrix,
        content_hash=frame["content_hash"].to_list() if "content_hash" in frame.columns else None,
        phash=frame["phash"].to_list() if "phash" in frame.columns else None,
        signals=signals,
        k=k,
        thresholds=thresholds_for(_embedding_model(store)),
    )
    store.write(Table.ANALYTICS, analytics_table(result))
    grouped = result.filter(pl.col("duplicate_group").is_not_null())
    flags = result.select(pl.col("quality_flags").explode()).drop_nulls()["quality_flags"].value_counts()
    per_flag = {f: int(flags.filter(pl.col("quality_flags") == f)["count"].sum()) for f in FLAGS}
    return {
        "images": result.height,
        "duplicate_groups": grouped["duplicate_group"].n_unique(),
        "images_in_duplicate_groups": grouped.height,
        "quality_flags": per_flag,
    }
