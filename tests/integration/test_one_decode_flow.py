"""The pipeline reads no pixels: the service decodes each image once and returns its thumbnail and file facts with
its tags; the flow stores them shard by shard."""

from __future__ import annotations

import hashlib
import time

import polars as pl
from PIL import Image

from curation import Curation, LocalStorageConfig
from curation.paths import dataset_paths
from curation.storage import LocalStorage
from curation.thumbnails import decode_with_facts
from tests.images import write_images


def test_curation_reads_each_image_once_in_the_service(tmp_path, settings, monkeypatch):
    names = write_images(tmp_path / "images", 33) + write_images(tmp_path / "images", 2, start=900, ext="png")
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a jpeg at all")
    reads: list[str] = []
    original = LocalStorage.read_bytes
    monkeypatch.setattr(LocalStorage, "read_bytes", lambda self, name: reads.append(name) or original(self, name))

    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("one decode", LocalStorageConfig(path=tmp_path / "images"), wait=True)

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed", record.failure_reason
    assert reads == []  # the pipeline never read an image: the service fetched each one
    files = pl.read_parquet(dataset_paths(settings.data_root, dataset_id).files)
    assert files.height == 36 and record.counts.failed == 1
    broken = files.filter(pl.col("blob_name") == "broken.jpg").row(0, named=True)
    assert broken["error"] == "not a recognised image format"
    assert broken["thumbnail"] is None and broken["content_hash"] == hashlib.sha256(b"not a jpeg at all").hexdigest()
    for row in files.filter(pl.col("error").is_null()).iter_rows(named=True):
        data = (tmp_path / "images" / row["blob_name"]).read_bytes()
        made = decode_with_facts(data, settings.thumbnail_size)
        assert row["content_hash"] == made.facts["content_hash"]
        assert (row["width"], row["height"], row["format"]) == (made.facts["width"], made.facts["height"], made.facts["format"])
        assert (settings.data_root / row["thumbnail"]).read_bytes() == made.thumbnail
        assert Image.open(settings.data_root / row["thumbnail"]).size == (160, 120)
    assert {r["format"] for r in files.filter(pl.col("error").is_null()).iter_rows(named=True)} == {"jpeg", "png"}
    analytics = pl.read_parquet(dataset_paths(settings.data_root, dataset_id).analytics)
    assert analytics.height == 36  # quality signals from the service feed the analytics


def test_a_service_that_returns_no_thumbnails_has_the_pipeline_decode_the_shard(tmp_path, settings):
    """A job submitted without a thumbnail side (as an older service answers every job): store_shard_results reads
    the shard's blobs from the dataset's own storage and makes the same thumbnails and facts itself."""
    from curation import pipeline
    from curation.client import connect
    from curation.registry import DatasetType
    from curation.shard_jobs import COMPLETED, ShardJob, save_job

    write_images(tmp_path / "images", 31)
    run = settings.model_copy(update={"service_url": None, "api_key": None, "shard_size": 64})
    config = LocalStorageConfig(path=tmp_path / "images")
    report = pipeline.list_and_validate(config, run)
    record = pipeline.register_dataset("old service", config, report, run, DatasetType.USER)
    blobs = report.accepted
    with connect(run) as client:
        job_id = client.submit_job(pipeline.sign_items(config, run, blobs))  # no thumbnail_side
        for _ in range(400):
            if client.job_status(job_id).finished:
                break
            time.sleep(0.05)
    save_job(dataset_paths(run.data_root, record.id), ShardJob(
        shard=0, replica=pipeline.replicas(run)[0].name, job_id=job_id, count=len(blobs), content="c",
        status=COMPLETED, names=[b.name for b in blobs], sizes=[b.size for b in blobs]))

    assert pipeline.store_shard_results(None, run, record.id, 0) == 31  # None: the dataset's own storage
    written = pipeline.write_dataset_results(record.id, run)
    assert (written.images, written.failed) == (31, 0)
    files = pl.read_parquet(dataset_paths(run.data_root, record.id).files)
    for row in files.iter_rows(named=True):
        made = decode_with_facts((tmp_path / "images" / row["blob_name"]).read_bytes(), run.thumbnail_size)
        assert row["content_hash"] == made.facts["content_hash"] and row["width"] == made.facts["width"]
        assert (run.data_root / row["thumbnail"]).read_bytes() == made.thumbnail


def test_one_status_round_at_a_time_stores_what_has_completed_and_finishes(tmp_path, settings):
    """`tracing=False` (the CLI's one-shot `track`) makes one round: stores the shards whose jobs completed, and
    finishes the dataset on the round that finds every job done."""
    write_images(tmp_path / "images", 40)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("one round at a time", LocalStorageConfig(path=tmp_path / "images"), wait=False)
    paths = dataset_paths(settings.data_root, dataset_id)
    assert not list(paths.work.glob("thumbnails-*.parquet"))  # nothing is stored before a round sees it completed
    statuses = []
    for _ in range(60):
        statuses.append(cr.tracing_curation_task(dataset_id, tracing=False))
        if statuses[-1] != "Processing":
            break
        time.sleep(0.2)
    assert statuses[-1] == "Completed" and set(statuses[:-1]) <= {"Processing"}
    assert len(list(paths.work.glob("thumbnails-*.parquet"))) == 3  # 40 images in shards of 16
    assert pl.read_parquet(paths.files)["error"].null_count() == 40
