"""Publishing on fsspec's in-memory filesystem: layout, marker last, and a failure half-way."""

from __future__ import annotations

import json
import uuid

import polars as pl
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from pydantic import SecretStr

from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.publish import PublishError, publish_dataset, storage_options
from curation.dataset.registry import Status
from curation.settings import Settings


def completed_dataset(root) -> DatasetStore:
    catalog = Catalog(root)
    store = catalog.dataset(catalog.register("small", storage={"kind": "local", "path": "/x"}).id)
    ids = [f"{i:016x}" for i in range(5)]
    store.write(Table.FILES, pl.DataFrame({"image_id": ids, "blob_name": [f"{i}.jpg" for i in ids]}).to_arrow())
    store.write(Table.METADATA, pl.DataFrame({"image_id": ids, "time": ["day"] * 5}).to_arrow())
    store.update_record(status=Status.COMPLETED)
    return store


def test_publish_writes_parquet_record_and_marker_under_the_dataset_id(tmp_path):
    settings = Settings(data_root=tmp_path)
    store = completed_dataset(tmp_path)
    dataset_id = store.dataset_id
    root = f"memory://{uuid.uuid4().hex}"
    published = publish_dataset(store, settings, root)
    assert published.files == ["files.parquet", "metadata.parquet", "dataset.json"]  # absent optional ones skipped
    fs = MemoryFileSystem()
    folder = f"{root}/{dataset_id}"
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder, detail=False)) == sorted([*published.files, "_SUCCESS"])
    assert json.loads(fs.cat_file(f"{folder}/_SUCCESS"))["files"] == published.files
    with fs.open(f"{folder}/files.parquet") as f:
        assert pl.read_parquet(f)["image_id"].to_list() == [f"{i:016x}" for i in range(5)]


def test_a_failed_republish_leaves_no_marker_and_no_temporary(tmp_path, monkeypatch):
    settings = Settings(data_root=tmp_path)
    store = completed_dataset(tmp_path)
    dataset_id = store.dataset_id
    root = f"memory://{uuid.uuid4().hex}"
    publish_dataset(store, settings, root)
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
        publish_dataset(store, settings, root)
    names = [p.rsplit("/", 1)[1] for p in fs.ls(f"{root}/{dataset_id}", detail=False)]
    assert "_SUCCESS" not in names and not [n for n in names if n.endswith(".tmp")]
    assert "metadata.parquet" in names  # the previous complete file stays until a new one replaces it whole


def test_refuses_unfinished_datasets_and_missing_urls(tmp_path):
    settings = Settings(data_root=tmp_path)
    store = completed_dataset(tmp_path)
    with pytest.raises(ValueError, match="no output URL"):
        publish_dataset(store, settings)
    store.update_record(status=Status.PROCESSING)
    with pytest.raises(ValueError, match="is Processing; only Completed"):
        publish_dataset(store, settings, "memory://x")


def test_storage_options_only_for_azure_urls():
    settings = Settings(azure_connection_string=SecretStr("AccountName=a;AccountKey=b"))
    assert storage_options("abfs://c/p", settings) == {"connection_string": "AccountName=a;AccountKey=b"}
    assert storage_options("s3://bucket/p", settings) == {} and storage_options("/data/out", settings) == {}
    assert storage_options("az://c/p", Settings(azure_sas_token=SecretStr("sv=1&sig=x"))) == {"sas_token": "sv=1&sig=x"}


def test_azure_ad_publishes_with_the_service_principal_or_default_credential_and_redacts_only_secrets():
    from curation.dataset.publish import _secrets

    principal = Settings(azure_tenant_id="t-1", azure_client_id="c-1", azure_client_secret=SecretStr("s3cr3t-value"))
    options = storage_options("abfs://c@acct.dfs.core.windows.net/p", principal)
    assert options == {"tenant_id": "t-1", "client_id": "c-1", "client_secret": "s3cr3t-value"}
    assert "s3cr3t-value" in _secrets(principal, options) and "t-1" not in _secrets(principal, options)
    default = Settings(azure_ad=True)
    assert storage_options("az://c/p", default) == {"anon": False}
    assert "False" not in _secrets(default, {"anon": False})  # an error's text keeps the word False
    assert storage_options("s3://bucket/p", principal) == {}
