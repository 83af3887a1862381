"""Publishing on fsspec's in-memory filesystem: layout, marker last, and a failure half-way."""

from __future__ import annotations

import json
import uuid

import polars as pl
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from pydantic import SecretStr

from curation import registry
from curation.paths import dataset_paths
from curation.publish import PublishError, publish_dataset, storage_options
from curation.registry import Status
from curation.settings import Settings


def completed_dataset(root) -> str:
    record = registry.register(root, "small", storage={"kind": "local", "path": "/x"})
    paths = dataset_paths(root, record.id)
    ids = [f"{i:016x}" for i in range(5)]
    pl.DataFrame({"image_id": ids, "blob_name": [f"{i}.jpg" for i in ids]}).write_parquet(paths.files)
    pl.DataFrame({"image_id": ids, "time": ["day"] * 5}).write_parquet(paths.metadata)
    registry.update(root, record.id, status=Status.COMPLETED)
    return record.id


def test_publish_writes_parquet_record_and_marker_under_the_dataset_id(tmp_path):
    settings = Settings(data_root=tmp_path)
    dataset_id = completed_dataset(tmp_path)
    root = f"memory://{uuid.uuid4().hex}"
    published = publish_dataset(settings, dataset_id, root)
    assert published.files == ["files.parquet", "metadata.parquet", "dataset.json"]  # absent optional ones skipped
    fs = MemoryFileSystem()
    folder = f"{root}/{dataset_id}"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder, detail=False)) == sorted([*published.files, "_SUCCESS"])
    assert json.loads(fs.cat_file(f"{folder}/_SUCCESS"))["files"] == published.files
    with fs.open(f"{folder}/files.parquet") as f:
        assert pl.read_parquet(f)["image_id"].to_list() == [f"{i:016x}" for i in range(5)]


def test_a_failed_republish_leaves_no_marker_and_no_temporary(tmp_path, monkeypatch):
    settings = Settings(data_root=tmp_path)
    dataset_id = completed_dataset(tmp_path)
    root = f"memory://{uuid.uuid4().hex}"
    publish_dataset(settings, dataset_id, root)
    fs = MemoryFileSystem()
    assert fs.exists(f"{root}/{dataset_id}/_SUCCESS")

    calls = []
    real_put = MemoryFileSystem.put_file

    def dropped_on_second_upload(self, lpath, rpath, **kwargs):  # as a network drop on metadata.parquet would
        calls.append(rpath)
        if len(calls) == 2:
            raise ConnectionError("connection reset by peer")
        return real_put(self, lpath, rpath, **kwargs)

    monkeypatch.setattr(MemoryFileSystem, "put_file", dropped_on_second_upload)
    with pytest.raises(PublishError, match=f"to {root}/{dataset_id}: ConnectionError: connection reset by peer"):
        publish_dataset(settings, dataset_id, root)
    names = [p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{dataset_id}", detail=False)]
    assert "_SUCCESS" not in names and not [n for n in names if n.endswith(".tmp")]
    assert "metadata.parquet" in names  # the previous complete file stays until a new one replaces it whole


def test_refuses_unfinished_datasets_and_missing_urls(tmp_path):
    settings = Settings(data_root=tmp_path)
    dataset_id = completed_dataset(tmp_path)
    with pytest.raises(ValueError, match="no output URL"):
        publish_dataset(settings, dataset_id)
    registry.update(tmp_path, dataset_id, status=Status.PROCESSING)
    with pytest.raises(ValueError, match="is Processing; only Completed"):
        publish_dataset(settings, dataset_id, "memory://x")


def test_storage_options_only_for_azure_urls():
    settings = Settings(azure_connection_string=SecretStr("AccountName=a;AccountKey=b"))
    assert storage_options("abfs://c/p", settings) == {"connection_string": "AccountName=a;AccountKey=b"}
    assert storage_options("s3://bucket/p", settings) == {} and storage_options("/data/out", settings) == {}
    assert storage_options("az://c/p", Settings(azure_sas_token=SecretStr("sv=1&sig=x"))) == {"sas_token": "sv=1&sig=x"}
