"""Finishing a dataset: its results Parquet from the stored shards, then Completed (or Failed when every image
failed)."""

from __future__ import annotations

from curation.dataset import shard_store
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.registry import DatasetRecord, Status
from curation.dataset.results import WrittenCounts, write_results
from curation.inference import shard_jobs
from curation.memory import release_free_memory
from curation.taxonomy import DEFAULT_TAXONOMY


def write_dataset_results(store: DatasetStore) -> WrittenCounts:
    """Write the results Parquet from every shard's stored results, and record counts and models; the status
    changes in `complete_dataset`. Every completed shard must be stored first (ValueError names one that is not)."""
    record = store.load_record()
    jobs = shard_jobs.read_jobs(store)
    if not jobs:
        raise RuntimeError(f"dataset {store.dataset_id} has no inference job yet")
    missing = shard_store.unstored(store, jobs)
    if missing:
        raise ValueError(f"dataset {store.dataset_id}: shard {missing[0].shard}'s results are not stored yet")
    release_free_memory()  # what inference and storing freed, before the whole-dataset steps
    written = write_results(store, shard_store.stored_pages(store), DEFAULT_TAXONOMY)
    info = shard_store.stored_models(store)
    counts = record.counts.model_copy(update={"processed": written.images - written.failed, "failed": written.failed})
    store.update_record(
        counts=counts,
        meta_model=info.get("model") or record.meta_model,
        embedding_model=info.get("embedding_model") or record.embedding_model,
    )
    return written


def complete_dataset(store: DatasetStore) -> DatasetRecord:
    """Mark the dataset Completed, or Failed when every image failed (the reason names the first error)."""
    c = store.load_record().counts
    if c.accepted > 0 and c.failed >= c.accepted:
        first = store.frame(Table.FILES, columns=["error"])["error"].drop_nulls()
        error = first[0] if len(first) else "unknown"
        reason = f"all {c.accepted} images failed; first error: {error}{_refused_hint(error)}"
        return store.mark_failed(reason)
    return store.update_record(status=Status.COMPLETED, failure_reason=None)


def _refused_hint(error: str) -> str:
    """What an HTTP 401/403 from the storage means for signed URLs, which the bare status does not say."""
    if error.startswith(("HTTP 401", "HTTP 403")):
        return (
            " (the storage refused the signed URL: it expired before the service fetched it, see"
            " CURATION_SAS_EXPIRY_MINUTES, or it lacks read permission)"
        )
    return ""
