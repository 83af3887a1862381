"""Exporting a dataset's inference results as JSON."""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from curation.dataset.catalog import DatasetStore, Table
from curation.taxonomy import CATEGORIES


def load_results(store: DatasetStore) -> pl.DataFrame:
    """Files joined with metadata: one row per image, tags null for images that failed."""
    store.require_completed("exported")
    return store.frame(Table.FILES).join(store.frame(Table.METADATA), on="image_id", how="left")


def results_json(store: DatasetStore) -> dict[str, Any]:
    """The dataset record and per-image results, as a JSON-ready dict."""
    record = store.load_record()
    images = []
    for row in load_results(store).iter_rows(named=True):
        tags = {c: {"label": row[c], "confidence": row[f"{c}_confidence"]} for c in CATEGORIES}
        images.append(
            {k: row[k] for k in ("image_id", "blob_name", "size", "width", "height", "format", "error")}
            | {"tags": tags}
        )
    return {"dataset": json.loads(record.model_dump_json()), "images": images}
