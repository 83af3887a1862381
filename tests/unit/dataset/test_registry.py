from __future__ import annotations

import json

import pytest

from curation.dataset.catalog import Catalog
from curation.dataset.registry import DatasetNotFound, DatasetType, DemoDatasetProtected, Status
from curation.ingest.ids import image_id_for, is_object_id, new_object_id


def test_object_ids_are_24_hex_unique_and_start_with_a_timestamp():
    ids = {new_object_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(is_object_id(i) for i in ids)
    import time

    assert abs(int(next(iter(ids))[:8], 16) - time.time()) < 5


def test_image_id_is_stable():
    assert image_id_for("a/b.jpg") == image_id_for("a/b.jpg") != image_id_for("a/c.jpg")


def test_register_load_update_and_list(tmp_path):
    catalog = Catalog(tmp_path)
    record = catalog.register("good dataset", storage={"kind": "local", "path": "/x"})
    assert record.status == Status.PROCESSING and record.type == DatasetType.USER
    store = catalog.dataset(record.id)
    loaded = store.load_record()
    assert loaded.name == "good dataset" and loaded.storage == {"kind": "local", "path": "/x"}
    store.mark_failed("because")
    assert store.load_record().failure_reason == "because"
    assert [r.id for r in catalog.records()] == [record.id]
    # the record is plain JSON on disk and no temporary file is left behind
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) == 1 and json.loads(files[0].read_text())["status"] == "Failed"


def test_delete_erases_user_dataset_and_refuses_demo(tmp_path):
    catalog = Catalog(tmp_path)
    user = catalog.register("u")
    demo = catalog.register("d", type=DatasetType.DEMO)
    catalog.dataset(user.id).mark_failed("ended")  # a Processing dataset is refused (tests/unit/viewer)
    catalog.dataset(user.id).delete()
    assert not catalog.dataset(user.id).exists() and not list(tmp_path.rglob(f"*{user.id}*"))  # nothing left
    with pytest.raises(DemoDatasetProtected):
        catalog.dataset(demo.id).delete()
    assert catalog.dataset(demo.id).load_record().name == "d"


def test_missing_and_malformed_ids(tmp_path):
    with pytest.raises(DatasetNotFound):
        Catalog(tmp_path).dataset("0" * 24).load_record()
    with pytest.raises(ValueError):
        Catalog(tmp_path).dataset("../../etc")

