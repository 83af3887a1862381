"""A completed shard's results are stored at once: thumbnails, file facts, tags and embeddings, then the job is
released; an unreadable job is lost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curation.dataset.catalog import Catalog, DatasetStore
from curation.dataset.shard_store import store_shard, stored_models, stored_pages, unstored
from curation.inference import result_pages
from curation.inference.client import JobNotFound
from curation.inference.shard_jobs import COMPLETED, LOST, ShardJob, ShardLost, load_job, save_job
from curation.inference.thumbnails import decode_with_facts, signal_names
from curation.ingest.ids import image_id_for
from curation.taxonomy import DEFAULT_TAXONOMY
from tests.images import jpeg_bytes

DATASET = "0123456789abcdef01234567"
NAMES = [f"img_{i}.jpg" for i in range(6)]


@dataclass
class Result:
    image_id: str
    tags: dict | None
    embedding: np.ndarray | None
    error: str | None
    facts: dict | None = None
    thumbnail: bytes | None = None


def _results(with_files: bool) -> list[Result]:
    """Image 0 decodes badly, image 1 was not fetched, image 2 crashed the model, image 5 has no result at all."""
    out = []
    for i, name in enumerate(NAMES[:5]):
        data = b"garbage" if i == 0 else jpeg_bytes(i, (320, 240))
        made = decode_with_facts(data, 64)
        tags = {c: (DEFAULT_TAXONOMY.classes[c][0], 0.9) for c in DEFAULT_TAXONOMY.categories}
        error = {0: made.facts["error"], 1: "HTTP 404 fetching x", 2: "model error: boom"}.get(i)
        facts = None if i == 1 else made.facts
        out.append(Result(image_id_for(name), None if error else tags, None if error else np.eye(4, dtype=np.float32)[i % 4],
                          error, facts, None if i == 1 else made.thumbnail))
    out.append(out[3])  # a repeated result (a retried page)
    return out


class Client:
    """The inference client at its boundary: pages of one job, a release, or a forgotten job."""

    def __init__(self, pages, forgotten: bool = False) -> None:
        self.pages, self.forgotten, self.released = pages, forgotten, []

    def model_info(self):
        return {"model": "m-1", "embedding_model": "e-1"}

    def iter_result_tables(self, job_id, page_size):
        if self.forgotten:
            raise JobNotFound(f"job {job_id} not found")
        yield from self.pages

    def release_job(self, job_id):
        self.released.append(job_id)


def _job(root: Path) -> tuple[DatasetStore, ShardJob]:
    store = DatasetStore(root, DATASET)
    job = ShardJob(shard=0, replica="http://r1", job_id="j1", count=6, content="c", status=COMPLETED,
                   names=NAMES, sizes=[100] * 6)
    return store, save_job(store, job)


def test_a_shard_with_thumbnails_from_the_service_is_stored_and_released(tmp_path):
    store, job = _job(tmp_path)
    results = _results(with_files=True)
    page = result_pages.from_results(results, DEFAULT_TAXONOMY.categories, 4, signal_names())
    client = Client([page.slice(0, 3), page.slice(3)])
    assert unstored(store, [job]) == [job]
    assert store_shard(store, job, client, 3) == 6
    assert client.released == ["j1"] and unstored(store, [job]) == []

    [files] = [pl.from_arrow(t) for t in store.iter_files_shards()]
    assert files["blob_name"].to_list() == NAMES and files["size"].to_list() == [100] * 6
    by_name = {r["blob_name"]: r for r in files.to_dicts()}
    assert by_name["img_0.jpg"]["error"] == "not a recognised image format" and by_name["img_0.jpg"]["thumbnail"] is None
    assert by_name["img_0.jpg"]["content_hash"]  # facts of what was fetched, even when it did not decode
    assert by_name["img_1.jpg"]["error"] == "HTTP 404 fetching x" and by_name["img_1.jpg"]["content_hash"] is None
    assert by_name["img_2.jpg"]["error"] is None and by_name["img_2.jpg"]["thumbnail"]  # model crash: still a thumbnail
    assert by_name["img_5.jpg"]["error"] is None and by_name["img_5.jpg"]["thumbnail"] is None  # unanswered
    made = decode_with_facts(jpeg_bytes(3, (320, 240)), 64)
    row = by_name["img_3.jpg"]
    assert {k: row[k] for k in made.facts} == made.facts  # facts and every signal, as the service measured them
    assert row["thumbnail"] == store.relative(store.thumbnail_path(image_id_for("img_3.jpg")))
    assert Catalog(tmp_path).resolve(row["thumbnail"]).read_bytes() == made.thumbnail

    [stored] = list(store.iter_results_shards())
    assert "thumbnail" not in stored.column_names and "blur" not in stored.column_names
    assert stored.column_names[:2] == ["image_id", "error"] and "embedding" in stored.column_names
    assert [t.num_rows for t in stored_pages(store)] == [6]  # the repeated one is dropped by write_results
    assert stored_models(store) == {"model": "m-1", "embedding_model": "e-1"}
    assert store_shard(store, job, Client([], forgotten=True), 3) == 0  # stored: not redone


def test_a_job_the_service_forgot_is_lost_for_re_submission(tmp_path):
    store, job = _job(tmp_path)
    with pytest.raises(ShardLost, match="unreadable on http://r1"):
        store_shard(store, job, Client([], forgotten=True), 100)
    assert load_job(store, 0).status == LOST and not store.has_files_shard(0)
