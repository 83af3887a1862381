"""A run that stopped half-way is detectable as stale and resumes without redoing finished shards."""

from __future__ import annotations

import pytest

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.inference.replicas import Replicas
from curation.inference.shards import check_job, store_shard_results
from tests.images import write_images
from tests.waiting import wait_for


def test_stale_dataset_is_marked_failed_and_resumed(tmp_path, settings):
    write_images(tmp_path / "images", 40)
    config = LocalStorageConfig(path=tmp_path / "images")
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("interrupted", config, wait=False)  # as if the process died while tracking
    store = Catalog(settings.data_root).dataset(dataset_id)
    with Replicas(cr.service_settings()) as replicas:
        # the service finishes the three shard jobs (40 images in shards of 16)
        wait_for(lambda: check_job(replicas, store).completed == 3, "the three shard jobs completing")
        for shard in (0, 1):  # ...the tracking stored two shards' results, then died
            assert store_shard_results(replicas, cr.settings, store, shard) == 16
    shard_files = [store.files_shard_path(i) for i in range(3)]
    assert [p.exists() for p in shard_files] == [True, True, False]
    kept_mtimes = [p.stat().st_mtime_ns for p in shard_files[:-1]]

    assert [r.id for r in cr.stale_datasets(older_than_hours=0)] == [dataset_id]
    [failed] = cr.stale_datasets(older_than_hours=0, mark_failed=True)
    assert failed.status.value == "Failed" and "stale" in failed.failure_reason

    assert cr.curate_dataset("ignored", config, wait=True, resume=dataset_id) == dataset_id
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed" and record.counts.processed == 40
    assert [p.stat().st_mtime_ns for p in shard_files[:-1]] == kept_mtimes  # finished shards not redone
    assert shard_files[-1].exists()
    files = store.frame(Table.FILES)
    assert files.height == 40 and files["image_id"].n_unique() == 40 and files["error"].null_count() == 40


def test_resume_refuses_other_storage_and_finished_datasets(tmp_path, settings):
    write_images(tmp_path / "images", 31)
    write_images(tmp_path / "other", 31)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("done", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    with pytest.raises(ValueError, match="already Completed"):
        cr.curate_dataset("x", LocalStorageConfig(path=tmp_path / "images"), resume=dataset_id)
    Catalog(settings.data_root).dataset(dataset_id).mark_failed("test")
    with pytest.raises(ValueError, match="other storage"):
        cr.curate_dataset("x", LocalStorageConfig(path=tmp_path / "other"), resume=dataset_id)
