"""The pipeline reads no pixels: the service decodes each image once and returns its thumbnail and file facts with
its tags; the flow stores them shard by shard."""

from __future__ import annotations

import hashlib

import polars as pl
from PIL import Image

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.inference.thumbnails import decode_with_facts
from curation.ingest.storage import LocalStorage
from tests.images import write_images
from tests.waiting import wait_for


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
    catalog = Catalog(settings.data_root)
    store = catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    assert files.height == 36 and record.counts.failed == 1
    broken = files.filter(pl.col("blob_name") == "broken.jpg").row(0, named=True)
    assert broken["error"] == "not a recognised image format"
    assert broken["thumbnail"] is None and broken["content_hash"] == hashlib.sha256(b"not a jpeg at all").hexdigest()
    for row in files.filter(pl.col("error").is_null()).iter_rows(named=True):
        data = (tmp_path / "images" / row["blob_name"]).read_bytes()
        made = decode_with_facts(data, settings.thumbnail_size)
        assert row["content_hash"] == made.facts["content_hash"]
        assert (row["width"], row["height"], row["format"]) == (made.facts["width"], made.facts["height"], made.facts["format"])
        assert catalog.resolve(row["thumbnail"]).read_bytes() == made.thumbnail
        assert Image.open(catalog.resolve(row["thumbnail"])).size == (160, 120)
    assert {r["format"] for r in files.filter(pl.col("error").is_null()).iter_rows(named=True)} == {"jpeg", "png"}
    analytics = store.frame(Table.ANALYTICS)
    assert analytics.height == 36  # quality signals from the service feed the analytics


def test_one_status_round_at_a_time_stores_what_has_completed_and_finishes(tmp_path, settings):
    """`tracing=False` (the CLI's one-shot `track`) makes one round: stores the shards whose jobs completed, and
    finishes the dataset on the round that finds every job done."""
    write_images(tmp_path / "images", 40)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("one round at a time", LocalStorageConfig(path=tmp_path / "images"), wait=False)
    store = Catalog(settings.data_root).dataset(dataset_id)
    assert not store.files_shards()  # nothing is stored before a round sees it completed
    statuses: list[str] = []

    def one_round() -> bool:
        statuses.append(cr.tracing_curation_task(dataset_id, tracing=False))
        return statuses[-1] != "Processing"

    # Rounds until one finds every job done: however many a busy machine needs (a deadline only guards a hang).
    wait_for(one_round, "a status round that finishes the dataset", poll_s=0.2, detail=lambda: statuses[-5:])
    assert statuses[-1] == "Completed" and set(statuses[:-1]) <= {"Processing"}
    assert len(store.files_shards()) == 3  # 40 images in shards of 16
    assert store.frame(Table.FILES)["error"].null_count() == 40
