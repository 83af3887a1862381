"""Exporting a dataset's inference results as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from curation import registry
from curation.paths import dataset_paths
from curation.registry import Status
from curation.taxonomy import CATEGORIES


def load_results(root: Path, dataset_id: str) -> pl.DataFrame:
    """Files joined with metadata: one row per image, tags null for images that failed."""
    paths = dataset_paths(root, dataset_id)
    record = registry.load(root, dataset_id)
    if record.status != Status.COMPLETED:
        raise ValueError(f"dataset {dataset_id} is {record.status.value}, not Completed: it has no results yet")
    return pl.read_parquet(paths.files).join(pl.read_parquet(paths.metadata), on="image_id", how="left")


def results_json(root: Path, dataset_id: str) -> dict[str, Any]:
    """The dataset record and per-image results, as a JSON-ready dict."""
    record = registry.load(root, dataset_id)
    images = []
    for row in load_results(root, dataset_id).iter_rows(named=True):
        tags = {c: {"label": row[c], "confidence": row[f"{c}_confidence"]} for c in CATEGORIES}
        images.append(
            {k: row[k] for k in ("image_id", "blob_name", "size", "width", "height", "format", "error")}
            | {"tags": tags}
        )
    return {"dataset": json.loads(record.model_dump_json()), "images": images}
