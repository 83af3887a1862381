"""End to end: Azurite → validation → SAS → the real service over HTTP → Parquet, through Prefect flows."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest

from curation import Curation, DatasetTooSmall
from curation.dataset.catalog import Catalog, Table
from curation.ingest.storage import open_storage
from tests.images import jpeg_bytes
from tests.integration.helpers import azure_config, leftovers, new_container, upload_images

SAS_SIGNATURE = re.compile(rb"sig=[A-Za-z0-9%+/=]{20,}")


def all_bytes_under(root: Path) -> list[tuple[Path, bytes]]:
    return [(p, p.read_bytes()) for p in root.rglob("*") if p.is_file()]


def prefect_database() -> Path:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url.get_secret_value()
    return Path(url.split("///", 1)[1])


def test_curate_container_end_to_end(azurite, settings, captured_logs, capfd):
    container = new_container(azurite)
    names = upload_images(container, 33, prefix="drive/")
    container.upload_blob("drive/corrupt.jpg", b"\xff\xd8\xff\xe0 this is not a jpeg")
    container.upload_blob("drive/notes.txt", b"not an image")
    container.upload_blob("drive/empty.png", b"")
    container.upload_blob("drive/copy_of_img_0001.jpg", jpeg_bytes(1))  # a planted exact duplicate
    config = azure_config(azurite, container, prefix="drive/")

    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset(name="good dataset", storage_config=config)
    assert len(dataset_id) == 24
    assert cr.tracing_curation_task(dataset_id=dataset_id, tracing=True) == "Completed"

    record = cr.get_dataset(dataset_id)
    assert (record.counts.found, record.counts.accepted, record.counts.failed) == (37, 35, 1)
    assert record.counts.rejected == {"unsupported extension '.txt'": 1, "empty (0 bytes)": 1}
    assert record.storage["container_name"] == container.container_name
    assert record.meta_model.startswith("efficientnet-lite0-heads-")  # the default model
    assert record.embedding_model == "efficientnet-lite0-pca256"

    catalog = Catalog(settings.data_root)
    store = catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    metadata = store.frame(Table.METADATA)
    embeddings = store.frame(Table.EMBEDDINGS)
    assert sorted(files["blob_name"]) == sorted([*names, "drive/corrupt.jpg", "drive/copy_of_img_0001.jpg"])
    assert metadata.height == 35 and embeddings.height == 34
    corrupt = files.filter(pl.col("blob_name") == "drive/corrupt.jpg").join(metadata, on="image_id")
    assert corrupt["error"][0] and corrupt["thumbnail"][0] is None
    assert corrupt.select("time", "weather", "road", "location").row(0) == (None, None, None, None)
    good = files.filter(pl.col("error").is_null())
    assert good.height == 34 and set(good["width"]) == {160} and set(good["height"]) == {120}
    assert set(good["format"]) == {"jpeg", "png"}
    assert all(catalog.resolve(t).is_file() for t in good["thumbnail"])

    # Analytics and sampling follow the results: the planted copy is an exact duplicate of its original.
    analytics = store.frame(Table.ANALYTICS).join(files.select("image_id", "blob_name"), on="image_id")
    assert analytics.height == 35
    pair = analytics.filter(pl.col("blob_name").is_in(["drive/img_0001.jpg", "drive/copy_of_img_0001.jpg"]))
    assert pair["duplicate_kind"].to_list() == ["exact", "exact"] and pair["duplicate_group"].n_unique() == 1
    sampling = store.frame(Table.SAMPLING)
    assert sorted(sampling["keep_rank"]) == list(range(34))  # every processed image, once

    # The secrets appear nowhere: data root, logs, console, Prefect's database.
    key = azurite.account_key
    for path, data in all_bytes_under(settings.data_root):
        assert key.encode() not in data, path
        assert not SAS_SIGNATURE.search(data), path
    out, err_text = capfd.readouterr()
    logs = "\n".join(captured_logs.lines) + out + err_text
    assert captured_logs.lines, "the log capture caught nothing"
    assert key not in logs and settings.api_key.get_secret_value() not in logs
    database = prefect_database().read_bytes()
    assert key.encode() not in database
    assert not SAS_SIGNATURE.search(database)  # Prefect's own schemas hold a 'sig=SIGNATURE' example, not a real one


def test_sas_urls_are_read_only_and_needed(azurite, settings):
    container = new_container(azurite)
    upload_images(container, 1)
    storage = open_storage(azure_config(azurite, container), settings)
    url = storage.sign_url("img_0000.png", datetime.now(UTC) + timedelta(minutes=5))
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.split("?")[0]).status_code in (403, 404)
    assert httpx.put(url, content=b"x", headers={"x-ms-blob-type": "BlockBlob"}).status_code == 403


def test_connection_string_and_container_sas_work_too(azurite, settings):
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas
    from pydantic import SecretStr

    from curation.ingest.storage import AzureStorageConfig

    container = new_container(azurite)
    upload_images(container, 2)
    by_string = AzureStorageConfig(container_name=container.container_name, connection_string=SecretStr(azurite.connection_string))
    assert [b.name for b in open_storage(by_string, settings).list_blobs()] == ["img_0000.png", "img_0001.jpg"]
    token = generate_container_sas(
        azurite.account_name, container.container_name, account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True), expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    by_sas = AzureStorageConfig(
        container_name=container.container_name, account_name=azurite.account_name,
        account_url=azurite.blob_endpoint, sas_token=SecretStr(token),
    )
    storage = open_storage(by_sas, settings)
    assert len(list(storage.list_blobs())) == 2
    assert httpx.get(storage.sign_url("img_0001.jpg", datetime.now(UTC) + timedelta(hours=1))).status_code == 200


def test_thirty_images_are_refused_and_no_dataset_is_created(azurite, settings):
    container = new_container(azurite)
    upload_images(container, 30)
    container.upload_blob("readme.md", b"hello")
    with pytest.raises(DatasetTooSmall) as info:
        Curation(settings=settings).curate_dataset("too small", azure_config(azurite, container))
    assert "got 30" in str(info.value) and "31 blobs found, 30 accepted" in str(info.value)
    assert leftovers(settings.data_root) == []


def test_hidden_blobs_are_rejected_at_listing_with_their_reason_like_a_folders(azurite, settings, tmp_path):
    """Issue #17: one rule for a container and a folder: a blob whose name or any folder on its path starts with '.'
    is a counted "hidden file" rejection (the folder used to skip them silently, the container to accept them)."""
    from curation.ingest.steps import list_and_validate
    from curation.ingest.storage import LocalStorageConfig

    container = new_container(azurite)
    names = upload_images(container, 31, prefix="drive/")
    hidden = ["drive/.DS_Store", "drive/.img_9999.jpg", "drive/.thumbs/img_0000.jpg", ".trash/drive/img_0001.jpg"]
    for i, name in enumerate(hidden):
        container.upload_blob(name, jpeg_bytes(i))
    azure = list_and_validate(open_storage(azure_config(azurite, container), settings), settings.min_images)
    assert sorted(b.name for b in azure.accepted) == sorted(names)
    assert azure.found == 35 and azure.rejected == {"hidden file": 4}

    # The same names in a folder: the same report.
    for name in names + hidden:
        (tmp_path / "folder" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / name).write_bytes(b"jpeg")
    local = list_and_validate(open_storage(LocalStorageConfig(path=tmp_path / "folder"), settings), settings.min_images)
    assert [b.name for b in local.accepted] == [b.name for b in azure.accepted]
    assert (local.found, local.rejected) == (azure.found, azure.rejected)
