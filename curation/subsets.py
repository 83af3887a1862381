"""Sampling a curated dataset and saving a selection of it as a derived dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from curation import registry
from curation.atomic import write_text_atomic
from curation.parquet_io import write_table
from curation.paths import DatasetPaths, dataset_paths
from curation.registry import Counts, DatasetRecord, Status
from curation.sampling import compute_sampling, sample_ids, sampling_table
from curation.sampling_report import fidelity_report
from curation.taxonomy import CATEGORIES


def sampling_inputs(paths: DatasetPaths) -> tuple[pl.DataFrame, np.ndarray]:
    """Tags, duplicate groups and quality of every image that has an embedding, with the aligned matrix.

    Images that failed inference have no embedding and are left out of the sampling order: every
    sample is drawn from the images that were processed.
    """
    embeddings = pl.read_parquet(paths.embeddings, columns=["image_id", "embedding"])
    frame = embeddings.select("image_id").join(pl.read_parquet(paths.metadata), on="image_id", how="left")
    if paths.analytics.exists():
        analytics = pl.read_parquet(paths.analytics)
        keep = [c for c in ("image_id", "duplicate_group", "quality_score") if c in analytics.columns]
        frame = frame.join(analytics.select(keep), on="image_id", how="left")
    matrix = embeddings["embedding"].to_numpy() if embeddings.height else np.zeros((0, 1), np.float32)
    return frame.select("image_id", *CATEGORIES, *[c for c in ("duplicate_group", "quality_score") if c in frame.columns]), np.asarray(matrix, dtype=np.float32)


def sample_dataset(root: Path, dataset_id: str, seed: int = 0, strategy: str = "stratified") -> dict[str, Any]:
    """Compute and store the dataset's sampling order, and its fidelity report against random sampling.

    Returns:
        The fidelity report (also written as sampling-report.json beside sampling.parquet).
    """
    paths = dataset_paths(root, dataset_id)
    frame, matrix = sampling_inputs(paths)
    sampling = compute_sampling(frame, matrix if len(matrix) else None, seed=seed, strategy=strategy)
    write_table(paths.sampling, sampling_table(sampling))
    report = fidelity_report(frame, matrix if len(matrix) else None, sampling) if frame.height else {"steps": []}
    report = {"dataset_id": dataset_id, "seed": seed, "strategy": strategy, "images": frame.height, **report}
    write_text_atomic(paths.sampling_report, json.dumps(report, indent=2, default=float))
    return report


def selected_ids(root: Path, dataset_id: str, fraction: float = 1.0, filters: dict[str, list[str | None]] | None = None) -> list[str]:
    """Image ids in the sample at `fraction`, restricted by tag filters (OR within a category, AND across).

    A filter value None selects images whose tag is None.
    """
    paths = dataset_paths(root, dataset_id)
    ids = sample_ids(pl.read_parquet(paths.sampling), fraction) if fraction < 1.0 else pl.read_parquet(paths.files)["image_id"]
    frame = pl.DataFrame({"image_id": ids}).join(pl.read_parquet(paths.metadata), on="image_id", how="left")
    for category, values in (filters or {}).items():
        wanted = [v for v in values if v is not None]
        condition = pl.col(category).is_in(wanted)
        if None in values:
            condition = condition | pl.col(category).is_null()
        frame = frame.filter(condition)
    return frame["image_id"].to_list()


def save_subset(
    root: Path,
    dataset_id: str,
    name: str,
    fraction: float = 1.0,
    filters: dict[str, list[str | None]] | None = None,
) -> DatasetRecord:
    """Register the selection as a new dataset whose original is the source; never writes to the storage.

    The new dataset holds the selected rows of every Parquet file (thumbnails stay the source's), a
    selection.json describing how it was made, and its own sampling order, so it can be curated again.
    """
    source = registry.load(root, dataset_id)
    if source.status != Status.COMPLETED:
        raise ValueError(f"dataset {dataset_id} is {source.status.value}; only Completed datasets can be sampled")
    ids = selected_ids(root, dataset_id, fraction, filters)
    if not ids:
        raise ValueError("the selection is empty: nothing to save")
    src = dataset_paths(root, dataset_id)
    record = registry.register(
        root,
        name,
        original_dataset=dataset_id,
        storage=source.storage,
        meta_model=source.meta_model,
        embedding_model=source.embedding_model,
        counts=Counts(found=len(ids), accepted=len(ids)),
    )
    dst = dataset_paths(root, record.id)
    keep = pl.DataFrame({"image_id": ids})
    for src_path, dst_path in [(src.files, dst.files), (src.metadata, dst.metadata), (src.embeddings, dst.embeddings), (src.analytics, dst.analytics)]:
        if src_path.exists():
            table = pl.read_parquet(src_path).join(keep, on="image_id", how="semi")
            write_table(dst_path, table.to_arrow())
    selection = {"source": dataset_id, "fraction": fraction, "filters": filters or {}, "image_ids": ids}
    write_text_atomic(dst.selection, json.dumps(selection, indent=2))
    files = pl.read_parquet(dst.files)
    failed = files["error"].is_not_null().sum()
    record = registry.update(root, record.id, status=Status.COMPLETED, counts=Counts(found=len(ids), accepted=len(ids), processed=len(ids) - failed, failed=failed))
    sample_dataset(root, record.id)
    return record
