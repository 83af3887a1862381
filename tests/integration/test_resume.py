"""A run that stopped half-way is detectable as stale and resumes without redoing finished shards."""

from __future__ import annotations

import time

import polars as pl
import pytest

from curation import Curation, LocalStorageConfig, pipeline
from curation.paths import dataset_paths
from curation.settings import use_settings
from tests.images import write_images


def test_stale_dataset_is_marked_failed_and_resumed(tmp_path, settings):
    write_images(tmp_path / "images", 40)
    config = LocalStorageConfig(path=tmp_path / "images")
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("interrupted", config, wait=False)  # as if the process died while tracking
    paths = dataset_paths(settings.data_root, dataset_id)
    with use_settings(cr.settings):
        for _ in range(600):  # the service finishes the three shard jobs (40 images in shards of 16)
            if pipeline.check_job(dataset_id, cr.settings).completed == 3:
                break
            time.sleep(0.05)
        for shard in (0, 1):  # ...the tracking stored two shards' results, then died
            assert pipeline.store_shard_results(None, cr.settings, dataset_id, shard) == 16
    shard_files = [paths.thumbnail_shard(i) for i in range(3)]
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
    files = pl.read_parquet(paths.files)
    assert files.height == 40 and files["image_id"].n_unique() == 40 and files["error"].null_count() == 40


def test_resume_refuses_other_storage_and_finished_datasets(tmp_path, settings):
    write_images(tmp_path / "images", 31)
    write_images(tmp_path / "other", 31)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("done", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    with pytest.raises(ValueError, match="already Completed"):
        cr.curate_dataset("x", LocalStorageConfig(path=tmp_path / "images"), resume=dataset_id)
    from curation import registry

    registry.mark_failed(settings.data_root, dataset_id, "test")
    with pytest.raises(ValueError, match="other storage"):
        cr.curate_dataset("x", LocalStorageConfig(path=tmp_path / "other"), resume=dataset_id)
