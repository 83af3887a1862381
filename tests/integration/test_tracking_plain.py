"""The library's tracker without Prefect: a folder curated with plain calls on an embedded service, to the end."""

from __future__ import annotations

from curation.dataset.catalog import Catalog, Table
from curation.dataset.registry import DatasetType
from curation.inference.shard_jobs import Progress
from curation.inference.shards import shards, submit_shard
from curation.ingest.steps import list_and_validate, register_dataset
from curation.ingest.storage import LocalStorageConfig, open_storage
from curation.run import open_run
from curation.tracking import track_plain
from tests.images import write_images


def test_the_plain_driver_curates_a_folder_to_completed(tmp_path, settings):
    write_images(tmp_path / "images", 40)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not an image")
    config = LocalStorageConfig(path=tmp_path / "images")
    seen: list[Progress] = []
    with open_run(settings.model_copy(update={"service_url": None, "api_key": None, "shard_size": 16}), config) as run:
        assert run.settings.service_urls  # the run reaches the embedded service it started
        storage = open_storage(config, run.settings)
        report = list_and_validate(storage, run.settings.min_images)
        record = register_dataset(Catalog(run.settings.data_root), storage, report, "plain", DatasetType.USER)
        store = run.dataset(record.id)
        for i, blobs in enumerate(shards(report.accepted, run.settings.shard_size)):
            submit_shard(storage, run.replicas, run.settings, store, i, blobs)
        assert track_plain(run, record.id, on_progress=seen.append) == "Completed"

    record = store.load_record()
    assert (record.status.value, record.counts.processed, record.counts.failed) == ("Completed", 40, 1)
    files = store.frame(Table.FILES)
    assert files.height == 41 and files.filter(files["error"].is_not_null())["blob_name"].to_list() == ["broken.jpg"]
    assert store.has(Table.ANALYTICS) and store.has(Table.SAMPLING)  # analysed and sampled, like the flow
    assert [p.name for p in store.files_shards()] == [f"files-0000{i}.parquet" for i in range(3)]
    assert seen and seen[-1].completed == seen[-1].shards == 3
