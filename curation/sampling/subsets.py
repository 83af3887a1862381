"""Sampling a curated dataset and saving a selection of it as a derived dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from curation.dataset.catalog import Catalog, DatasetStore, Document, Table
from curation.dataset.registry import Counts, DatasetRecord, Status
from curation.dataset.tags import filter_tags
from curation.sampling.fidelity import fidelity_report
from curation.sampling.order import compute_sampling, sample_ids, sampling_table
from curation.taxonomy import CATEGORIES

# The tables a derived dataset copies the selected rows of (its sampling order is computed anew).
SUBSET_TABLES = (Table.FILES, Table.METADATA, Table.EMBEDDINGS, Table.ANALYTICS)


def sampling_inputs(store: DatasetStore) -> tuple[pl.DataFrame, np.ndarray]:
    """Tags, duplicate groups and quality of every image that has an embedding, with the aligned matrix.

    Images that failed inference have no embedding and are left out of the sampling order: every
    sample is drawn from the images that were processed.
    """
    embeddings = store.frame(Table.EMBEDDINGS, columns=["image_id", "embedding"])
    frame = embeddings.select("image_id").join(store.frame(Table.METADATA), on="image_id", how="left")
    if store.has(Table.ANALYTICS):
        analytics = store.frame(Table.ANALYTICS)
        keep = [c for c in ("image_id", "duplicate_group", "quality_score") if c in analytics.columns]
        frame = frame.join(analytics.select(keep), on="image_id", how="left")
    matrix = embeddings["embedding"].to_numpy() if embeddings.height else np.zeros((0, 1), np.float32)
    return frame.select("image_id", *CATEGORIES, *[c for c in ("duplicate_group", "quality_score") if c in frame.columns]), np.asarray(matrix, dtype=np.float32)


def sample_dataset(store: DatasetStore, seed: int = 0, strategy: str = "stratified") -> dict[str, Any]:
    """Compute and store the dataset's sampling order, and its fidelity report against random sampling.

    Returns:
        The fidelity report (also stored as the dataset's sampling report beside its sampling table).
    """
    frame, matrix = sampling_inputs(store)
    sampling = compute_sampling(frame, matrix if len(matrix) else None, seed=seed, strategy=strategy)
    store.write(Table.SAMPLING, sampling_table(sampling))
    report = fidelity_report(frame, matrix if len(matrix) else None, sampling) if frame.height else {"steps": []}
    report = {"dataset_id": store.dataset_id, "seed": seed, "strategy": strategy, "images": frame.height, **report}
    store.write_json(Document.SAMPLING_REPORT, report)
    return report


def selected_ids(store: DatasetStore, fraction: float = 1.0, filters: dict[str, list[str | None]] | None = None) -> list[str]:
    """Image ids in the sample at `fraction`, restricted by tag filters (OR within a category, AND across).

    A filter value None or "None" selects images whose tag is None (`curation.dataset.tags`).
    """
    if fraction < 1.0:
        ids = sample_ids(store.frame(Table.SAMPLING), fraction)
    else:
        ids = store.frame(Table.FILES, columns=["image_id"])["image_id"]
    frame = pl.DataFrame({"image_id": ids}).join(store.frame(Table.METADATA), on="image_id", how="left")
    return filter_tags(frame, filters or {})["image_id"].to_list()


def image_ids_for(source: DatasetStore, images: Sequence[str]) -> list[str]:
    """The image ids of `images`, each an image id or a blob name of the source, in the order given (repeats once).

    Raises ValueError naming the first few that are neither, and how many there are: a list that does not match the
    dataset is a mistake to show, not a smaller subset to save.
    """
    files = source.frame(Table.FILES, columns=["image_id", "blob_name"])
    known = set(files["image_id"].to_list())
    by_blob = dict(zip(files["blob_name"].to_list(), files["image_id"].to_list(), strict=True))
    ids: dict[str, None] = {}
    unmatched: list[str] = []
    for name in (n.strip() for n in images):
        if not name:
            continue
        image_id = name if name in known else by_blob.get(name)
        if image_id is None:
            unmatched.append(name)
        else:
            ids[image_id] = None
    if unmatched:
        shown = ", ".join(repr(n) for n in unmatched[:5]) + (", ..." if len(unmatched) > 5 else "")
        raise ValueError(f"{len(unmatched)} of {len(unmatched) + len(ids)} listed images are neither an image id nor a "
                         f"blob name of dataset {source.dataset_id}: {shown}")
    if not ids:
        raise ValueError("the list of images is empty")
    return list(ids)


def save_subset(
    source: DatasetStore,
    name: str,
    fraction: float = 1.0,
    filters: dict[str, list[str | None]] | None = None,
    image_ids: Sequence[str] | None = None,
    region: Mapping[str, Any] | None = None,
) -> DatasetRecord:
    """Register the selection as a new dataset whose original is the source; never writes to the storage.

    The new dataset holds the selected rows of every table (thumbnails stay the source's), a selection
    document describing how it was made, and its own sampling order, so it can be curated again.
    `image_ids` restricts the selection to those images (a region drawn in the dashboard, whose outline `region`
    the selection document keeps). Raises ValueError when the source is not Completed or the selection is empty.
    """
    record = source.require_completed("sampled")
    ids = selected_ids(source, fraction, filters)
    if image_ids is not None:
        chosen = set(image_ids)
        ids = [i for i in ids if i in chosen]
    if not ids:
        raise ValueError("the selection is empty: nothing to save")
    catalog = Catalog(source.root)
    derived = catalog.register(
        name,
        original_dataset=source.dataset_id,
        storage=record.storage,
        meta_model=record.meta_model,
        embedding_model=record.embedding_model,
        counts=Counts(found=len(ids), accepted=len(ids)),
    )
    target = catalog.dataset(derived.id)
    keep = pl.DataFrame({"image_id": ids})
    for table in SUBSET_TABLES:
        if source.has(table):
            target.write(table, source.frame(table).join(keep, on="image_id", how="semi").to_arrow())
    selection = {"source": source.dataset_id, "fraction": fraction, "filters": filters or {}, "image_ids": ids}
    if region is not None:
        selection["region"] = dict(region)
    target.write_json(Document.SELECTION, selection)
    failed = int(target.frame(Table.FILES, columns=["error"])["error"].is_not_null().sum())
    derived = target.update_record(
        status=Status.COMPLETED,
        counts=Counts(found=len(ids), accepted=len(ids), processed=len(ids) - failed, failed=failed),
    )
    sample_dataset(target)
    return derived
