from __future__ import annotations

import json

import pytest

from curation import registry
from curation.ids import image_id_for, is_object_id, new_object_id
from curation.paths import dataset_paths
from curation.registry import DatasetNotFound, DatasetType, DemoDatasetProtected, Status


def test_object_ids_are_24_hex_unique_and_start_with_a_timestamp():
    ids = {new_object_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_object_id(i) for i in ids)
    import time

    assert abs(int(next(iter(ids))[:8], 16) - time.time()) < 5


def test_image_id_is_stable():
    assert image_id_for("a/b.jpg") == image_id_for("a/b.jpg") != image_id_for("a/c.jpg")


def test_register_load_update_and_list(tmp_path):
    record = registry.register(tmp_path, "good dataset", storage={"kind": "local", "path": "/x"})
    assert record.status == Status.PROCESSING and record.type == DatasetType.USER
    loaded = registry.load(tmp_path, record.id)
    assert loaded.name == "good dataset" and loaded.storage == {"kind": "local", "path": "/x"}
    registry.mark_failed(tmp_path, record.id, "because")
    assert registry.load(tmp_path, record.id).failure_reason == "because"
    assert [r.id for r in registry.list_records(tmp_path)] == [record.id]
    # the record is plain JSON on disk and no temporary file is left behind
    files = sorted(p.name for p in dataset_paths(tmp_path, record.id).dir.iterdir())
    assert files == ["dataset.json"]
    assert json.loads(dataset_paths(tmp_path, record.id).record.read_text())["status"] == "Failed"


def test_delete_erases_user_dataset_and_refuses_demo(tmp_path):
    user = registry.register(tmp_path, "u")
    demo = registry.register(tmp_path, "d", type=DatasetType.DEMO)
    registry.delete(tmp_path, user.id)
    assert not dataset_paths(tmp_path, user.id).dir.exists()
    with pytest.raises(DemoDatasetProtected):
        registry.delete(tmp_path, demo.id)
    assert registry.load(tmp_path, demo.id).name == "d"


def test_missing_and_malformed_ids(tmp_path):
    with pytest.raises(DatasetNotFound):
        registry.load(tmp_path, "0" * 24)
    with pytest.raises(ValueError):
        dataset_paths(tmp_path, "../../etc")
