"""Storing one shard's results as soon as its inference job completes: thumbnails, file facts, tags, embeddings.

The service decodes each image once and returns, with its tags and embedding, its thumbnail (JPEG bytes), file
facts and quality signals (curation.inference.result_pages). Per shard this writes, through the dataset's store, the
thumbnails, the files/signals table (the thumbnail shard, the marker that the shard is stored) and the tags and
embeddings (the results shard), then lets the service forget the job, so neither side holds a finished shard's
results. `write_results` later merges the shards into the dataset's Parquet without asking the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.dataset.catalog import DatasetStore
from curation.dataset.parquet_io import shard_schema
from curation.inference.client import InferenceClient, JobNotFound, ServiceError, TransientServiceError
from curation.inference.result_pages import FILE_COLUMNS
from curation.inference.shard_jobs import COMPLETED, ShardJob, ShardLost, lose
from curation.inference.thumbnails import signal_names, write_thumbnail
from curation.ingest.ids import image_id_for
from curation.ingest.storage import BlobInfo

logger = logging.getLogger(__name__)
MODEL_KEYS = (b"model", b"embedding_model")


def unstored(store: DatasetStore, jobs: list[ShardJob]) -> list[ShardJob]:
    """The shards whose job has Completed and whose results are not stored yet."""
    return [j for j in jobs if j.status == COMPLETED and not store.has_files_shard(j.shard)]


def _first_rows(results: pa.Table, ids: list[str]) -> pa.Array:
    """For each id, the row of its first result (a retried page may repeat one), null when there is none."""
    first: dict[str, int] = {}
    for row, image_id in enumerate(results["image_id"].to_pylist()):
        first.setdefault(image_id, row)
    return pa.array([first.get(i) for i in ids], pa.int64())


def files_from_results(
    blobs: list[BlobInfo], results: pa.Table, thumbnail_path: Callable[[str], Path], relative: Callable[[Path], str]
) -> pa.Table:
    """The shard's files/signals table from result pages that carry file columns, writing each thumbnail.

    An image without a thumbnail (it could not be fetched or decoded) keeps the service's reason as its error; an
    image the service did not answer has no facts and no error here (write_results records it as unanswered)."""
    ids = [image_id_for(b.name) for b in blobs]
    got = results.take(_first_rows(results, ids))
    names: list[str | None] = []
    for image_id, jpeg in zip(ids, got["thumbnail"].to_pylist(), strict=True):
        if jpeg is None:
            names.append(None)
            continue
        target = thumbnail_path(image_id)
        write_thumbnail(target, jpeg)
        names.append(relative(target))
    has_thumbnail = pa.array([n is not None for n in names], pa.bool_())
    schema = shard_schema(signal_names())
    given = {
        "image_id": pa.array(ids, pa.string()),
        "blob_name": pa.array([b.name for b in blobs], pa.string()),
        "size": pa.array([b.size for b in blobs], pa.int64()),
        "thumbnail": pa.array(names, pa.string()),
        "error": pc.if_else(has_thumbnail, pa.scalar(None, pa.string()), got["error"]),
    }
    columns = [given[f.name] if f.name in given else got[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def result_columns(results: pa.Table) -> pa.Table:
    """The tags, errors and embeddings of a result page, without its file columns and signals."""
    drop = set(FILE_COLUMNS) | set(signal_names())
    return results.select([c for c in results.column_names if c not in drop])


def store_shard(store: DatasetStore, job: ShardJob, client: InferenceClient, page_size: int) -> int:
    """Read a completed shard job's results and store them (see the module docstring); returns the images stored.

    A job the replica cannot answer for (down past the transient budget, or forgotten) is marked lost and raises
    ShardLost, so the tracker re-submits the shard."""
    if store.has_files_shard(job.shard):
        return 0
    blobs = job.blobs()
    try:
        info = client.model_info()
        pages = list(client.iter_result_tables(job.job_id, page_size))
    except (TransientServiceError, JobNotFound) as exc:
        lose(store, job, f"results unreadable on {job.replica}: {exc}")
        raise ShardLost(f"shard {job.shard}'s results are unreadable on {job.replica}: {exc}") from None
    results = pa.concat_tables(pages, promote_options="default") if pages else _empty_results()
    files = files_from_results(blobs, results, store.thumbnail_path, store.relative)
    meta = {key: str(info.get(key.decode()) or "").encode() for key in MODEL_KEYS}
    tags = result_columns(results)
    store.write_results_shard(job.shard, tags.replace_schema_metadata({**(tags.schema.metadata or {}), **meta}))
    store.write_files_shard(job.shard, files)  # last: its presence means the shard is stored
    try:
        client.release_job(job.job_id)  # stored: the service may forget it (it would after its retention anyway)
    except ServiceError as exc:
        logger.warning("replica %s kept job %s: %s", job.replica, job.job_id, exc)
    return files.num_rows


def _empty_results() -> pa.Table:
    return pa.table({"image_id": pa.array([], pa.string()), "error": pa.array([], pa.string())})


def stored_pages(store: DatasetStore) -> Iterator[pa.Table]:
    """Every stored shard's tags and embeddings, one shard at a time, for `results.write_results`."""
    return store.iter_results_shards()


def stored_models(store: DatasetStore) -> dict[str, str]:
    """The model and embedding model the stored shards were made with (the first shard that names them)."""
    for path in store.results_shards():
        meta = pq.read_schema(path).metadata or {}
        found = {k.decode(): meta[k].decode() for k in MODEL_KEYS if meta.get(k)}
        if found:
            return found
    return {}
