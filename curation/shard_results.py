"""Storing one shard's results as soon as its inference job completes: thumbnails, file facts, tags, embeddings.

The service decodes each image once and returns, with its tags and embedding, its thumbnail (JPEG bytes), file
facts and quality signals (curation.result_pages). Per shard this writes the thumbnails under the data root, the
files/signals table (`work/thumbnails-NNNNN.parquet`, the marker that the shard is stored) and the tags and
embeddings (`work/results-NNNNN.parquet`), then lets the service forget the job, so neither side holds a finished
shard's results. `write_results` later merges the shards into the dataset's Parquet without asking the service.

A service that returns no thumbnails (JSON results, or an older service) still works: the shard's images are then
read from storage and decoded here (curation.thumbnails.thumbnail_rows), as before the service made them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.client import InferenceClient, JobNotFound, ServiceError, TransientServiceError
from curation.ids import image_id_for
from curation.parquet_io import rows_to_table, shard_schema, write_table
from curation.paths import DatasetPaths
from curation.result_pages import FILE_COLUMNS
from curation.shard_jobs import COMPLETED, ShardJob, ShardLost, lose
from curation.storage import BlobInfo
from curation.thumbnails import signal_names, thumbnail_rows, write_thumbnail

logger = logging.getLogger(__name__)
MODEL_KEYS = (b"model", b"embedding_model")


def is_stored(paths: DatasetPaths, shard: int) -> bool:
    return paths.thumbnail_shard(shard).exists()


def unstored(paths: DatasetPaths, jobs: list[ShardJob]) -> list[ShardJob]:
    """The shards whose job has Completed and whose results are not stored yet."""
    return [j for j in jobs if j.status == COMPLETED and not is_stored(paths, j.shard)]


def _first_rows(results: pa.Table, ids: list[str]) -> pa.Array:
    """For each id, the row of its first result (a retried page may repeat one), null when there is none."""
    first: dict[str, int] = {}
    for row, image_id in enumerate(results["image_id"].to_pylist()):
        first.setdefault(image_id, row)
    return pa.array([first.get(i) for i in ids], pa.int64())


def files_from_results(
    blobs: list[BlobInfo], results: pa.Table, thumbnail_path: Callable[[str], Path], root: Path
) -> pa.Table:
    """The shard's files/signals table from result pages that carry file columns, writing each thumbnail.

    An image without a thumbnail (it could not be fetched or decoded) keeps the service's reason as its error; an
    image the service did not answer has no facts and no error here (write_results records it as unanswered)."""
    ids = [image_id_for(b.name) for b in blobs]
    got = results.take(_first_rows(results, ids))
    relative: list[str | None] = []
    for image_id, jpeg in zip(ids, got["thumbnail"].to_pylist(), strict=True):
        if jpeg is None:
            relative.append(None)
            continue
        target = thumbnail_path(image_id)
        write_thumbnail(target, jpeg)
        relative.append(target.relative_to(root).as_posix())
    has_thumbnail = pa.array([r is not None for r in relative], pa.bool_())
    schema = shard_schema(signal_names())
    given = {
        "image_id": pa.array(ids, pa.string()),
        "blob_name": pa.array([b.name for b in blobs], pa.string()),
        "size": pa.array([b.size for b in blobs], pa.int64()),
        "thumbnail": pa.array(relative, pa.string()),
        "error": pc.if_else(has_thumbnail, pa.scalar(None, pa.string()), got["error"]),
    }
    columns = [given[f.name] if f.name in given else got[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def result_columns(results: pa.Table) -> pa.Table:
    """The tags, errors and embeddings of a result page, without its file columns and signals."""
    drop = set(FILE_COLUMNS) | set(signal_names())
    return results.select([c for c in results.column_names if c not in drop])


def store_shard(
    paths: DatasetPaths,
    job: ShardJob,
    client: InferenceClient,
    page_size: int,
    local_thumbnails: Callable[[list[BlobInfo]], list[dict[str, object]]],
) -> int:
    """Read a completed shard job's results and store them (see the module docstring); returns the images stored.

    A job the replica cannot answer for (down past the transient budget, or forgotten) is marked lost and raises
    ShardLost, so the tracker re-submits the shard. `local_thumbnails` makes the shard's files rows from storage,
    for a service that returns no thumbnails."""
    if is_stored(paths, job.shard):
        return 0
    blobs = job.blobs()
    try:
        info = client.model_info()
        pages = list(client.iter_result_tables(job.job_id, page_size))
    except (TransientServiceError, JobNotFound) as exc:
        lose(paths, job, f"results unreadable on {job.replica}: {exc}")
        raise ShardLost(f"shard {job.shard}'s results are unreadable on {job.replica}: {exc}") from None
    results = pa.concat_tables(pages, promote_options="default") if pages else _empty_results()
    if "thumbnail" in results.column_names:
        files = files_from_results(blobs, results, paths.thumbnail, paths.root)
    else:  # a service that returns no thumbnails: decode the shard's images here
        files = rows_to_table(local_thumbnails(blobs), shard_schema(signal_names()))
    meta = {key: str(info.get(key.decode()) or "").encode() for key in MODEL_KEYS}
    tags = result_columns(results)
    write_table(paths.results_shard(job.shard), tags.replace_schema_metadata({**(tags.schema.metadata or {}), **meta}))
    write_table(paths.thumbnail_shard(job.shard), files)  # last: its presence means the shard is stored
    try:
        client.release_job(job.job_id)  # stored: the service may forget it (it would after its retention anyway)
    except ServiceError as exc:
        logger.warning("replica %s kept job %s: %s", job.replica, job.job_id, exc)
    return files.num_rows


def _empty_results() -> pa.Table:
    return pa.table({"image_id": pa.array([], pa.string()), "error": pa.array([], pa.string())})


def stored_pages(paths: DatasetPaths) -> Iterator[pa.Table]:
    """Every stored shard's tags and embeddings, one shard at a time, for `results.write_results`."""
    for path in sorted(paths.work.glob("results-*.parquet")):
        yield pq.read_table(path)


def stored_models(paths: DatasetPaths) -> dict[str, str]:
    """The model and embedding model the stored shards were made with (the first shard that names them)."""
    for path in sorted(paths.work.glob("results-*.parquet")):
        meta = pq.read_schema(path).metadata or {}
        found = {k.decode(): meta[k].decode() for k in MODEL_KEYS if meta.get(k)}
        if found:
            return found
    return {}


def local_thumbnail_rows(
    read_bytes: Callable[[str], bytes], paths: DatasetPaths, max_side: int, read_concurrency: int
) -> Callable[[list[BlobInfo]], list[dict[str, object]]]:
    """The fallback of store_shard: read and decode a shard's images here (curation.thumbnails)."""
    return lambda blobs: thumbnail_rows(blobs, read_bytes, paths.thumbnail, paths.root, max_side, read_concurrency)
