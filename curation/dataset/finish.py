"""Finishing a dataset: its results Parquet from the stored shards, then Completed (or Failed when every image
failed)."""

from __future__ import annotations

from curation.dataset import shard_store
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.registry import DatasetRecord, Status, TransientFailures
from curation.dataset.results import WrittenCounts, write_results
from curation.inference import shard_jobs
from curation.inference.result_pages import RETRYABLE
from curation.memory import release_free_memory
from curation.taxonomy import DEFAULT_TAXONOMY


def require_few_retryable(dataset_id: str, retryable: int, images: int, max_share: float) -> None:
    """Raise TransientFailures when more than max_share of a run's images failed for a transient reason."""
    if images and retryable > max_share * images:
        raise TransientFailures(
            f"dataset {dataset_id}: {retryable} of the {images} images this run curated ({retryable / images:.0%}) "
            f"failed for a transient reason, more than CURATION_MAX_RETRYABLE_SHARE ({max_share:.0%}); the next "
            "curate-new-blobs run processes them again"
        )


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
    counts = record.counts.model_copy(
        update={"processed": written.images - written.failed, "failed": written.failed, "retryable": written.retryable}
    )
    store.update_record(
        counts=counts,
        meta_model=info.get("model") or record.meta_model,
        embedding_model=info.get("embedding_model") or record.embedding_model,
    )
    return written


def complete_dataset(store: DatasetStore, max_retryable_share: float = 1.0) -> DatasetRecord:
    """Mark the dataset Completed; Failed when every image failed, or when more than max_retryable_share of them
    failed for a transient reason (the reason names the first error and how to process them again)."""
    record = store.load_record()
    c = record.counts
    if c.accepted > 0 and c.failed >= c.accepted:
        error = _first_error(store)
        reason = f"all {c.accepted} images failed; first error: {error}{_refused_hint(error)}{_resume_hint(record)}"
        return store.mark_failed(reason)
    # A version's staging dataset is judged with the version it joins (curate-new-blobs, a resume's retry).
    if record.parent_id is None and c.accepted > 0 and c.retryable > max_retryable_share * c.accepted:
        reason = (
            f"{c.retryable} of {c.accepted} images ({c.retryable / c.accepted:.0%}) failed for a transient reason, "
            f"more than CURATION_MAX_RETRYABLE_SHARE ({max_retryable_share:.0%}); first: "
            f"{_first_error(store, retryable=True)}{_resume_hint(record)}"
        )
        return store.mark_failed(reason)
    return store.update_record(status=Status.COMPLETED, failure_reason=None)


def _first_error(store: DatasetStore, retryable: bool = False) -> str:
    errors = store.frame(Table.FILES, columns=["error"])["error"].drop_nulls()
    if retryable:
        errors = errors.filter(errors.str.starts_with(RETRYABLE))
    return errors[0] if len(errors) else "unknown"


def _resume_hint(record: DatasetRecord) -> str:
    if not record.counts.retryable:
        return ""
    if record.parent_id is not None:  # a version's staging dataset: its delta is curated again
        return f". The next curate-new-blobs run, or `curation curate --resume {record.parent_id}`, processes them again"
    return f". Once the storage answers again, `curation curate --resume {record.id}` processes them again"


def _refused_hint(error: str) -> str:
    """What an HTTP 401/403 from the storage means for signed URLs, which the bare status does not say."""
    if error.startswith(("HTTP 401", "HTTP 403")) and "signed URL" in error:  # the service's error explains; once
        return " (a SAS that expires before the service fetches the image: see CURATION_SAS_EXPIRY_MINUTES)"
    if error.startswith(("HTTP 401", "HTTP 403")):
        return (
            " (the storage refused the signed URL: it expired before the service fetched it, see"
            " CURATION_SAS_EXPIRY_MINUTES, or it lacks read permission)"
        )
    return ""
