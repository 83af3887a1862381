"""Publishing a finished dataset to fsspec URLs: abfs:// on Azurite (read back by DuckDB and polars), local paths."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from adlfs import AzureBlobFileSystem
from polars.testing import assert_frame_equal
from pydantic import SecretStr
from typer.testing import CliRunner

from curation import Curation, LocalStorageConfig, cli
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.publish import PublishError, display_url
from curation.settings import Settings, use_settings
from tests.images import write_images
from tests.integration.helpers import new_container

PARQUET = ["files", "metadata", "embeddings", "analytics", "sampling"]
# A syntactically valid key that Azurite rejects: it must never show in an error.
WRONG_KEY = "V3JvbmdLZXlGb3JQdWJsaXNoVGVzdHNPbmx5V3JvbmdLZXlGb3JQdWJsaXNoVGVzdHM="


@pytest.fixture(scope="module")
def curated(tmp_path_factory, azurite):
    """35 local images curated on the embedded service with CURATION_OUTPUT_URL on Azurite: published by the flow."""
    images = tmp_path_factory.mktemp("images")
    write_images(images, 35)
    container = new_container(azurite)
    settings = Settings(
        data_root=tmp_path_factory.mktemp("data"),
        poll_interval_s=0.2,
        shard_size=8,
        output_url=f"abfs://{container.container_name}/exports",
        azure_connection_string=SecretStr(azurite.connection_string),
    )
    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset("published", LocalStorageConfig(path=images), wait=True)
    return cr, dataset_id, container.container_name


def local_frame(cr: Curation, dataset_id: str, name: str) -> pl.DataFrame:
    return DatasetStore(cr.settings.data_root, dataset_id).frame(Table(name))


def test_curation_publishes_to_azurite_and_duckdb_and_polars_read_it_back(curated, azurite):
    cr, dataset_id, container = curated
    assert cr.get_dataset(dataset_id).status.value == "Completed"
    folder = f"{container}/exports/{dataset_id}"
    fs = AzureBlobFileSystem(connection_string=azurite.connection_string)
    names = sorted(Path(p).name for p in fs.ls(folder, detail=False))
    assert names == sorted(["_SUCCESS", "dataset.json", *[f"{n}.parquet" for n in PARQUET]])  # no temporary left
    manifest = json.loads(fs.cat_file(f"{folder}/_SUCCESS"))
    assert manifest["dataset_id"] == dataset_id and manifest["files"][-1] == "dataset.json"

    con = duckdb.connect()
    con.register_filesystem(fs)  # DuckDB's own azure extension would need a download; adlfs is installed
    options = {
        "account_name": azurite.account_name,
        "account_key": azurite.account_key,
        "endpoint": azurite.blob_endpoint,
        "allow_http": "true",
    }
    for name in PARQUET:
        local = local_frame(cr, dataset_id, name)
        url = f"abfs://{folder}/{name}.parquet"
        count, ids = con.sql(f"SELECT count(*), list(image_id ORDER BY image_id) FROM read_parquet('{url}')").fetchall()[0]
        assert count == local.height == 35  # every image decodes, so every file has a row per image
        assert ids == sorted(local["image_id"].to_list())
        assert_frame_equal(pl.read_parquet(url, storage_options=options), local)  # polars' own object store

    published = json.loads(fs.cat_file(f"{folder}/dataset.json"))
    assert published["id"] == dataset_id and published["status"] == "Completed"
    assert published["counts"]["accepted"] == 35
    for path in fs.find(folder):  # the credential that wrote them is in none of the published files
        data = fs.cat_file(path)
        assert azurite.account_key.encode() not in data and b"AccountKey" not in data


def test_publish_to_a_plain_path_and_a_file_url(curated, tmp_path):
    cr, dataset_id, _ = curated
    for url, folder in [(str(tmp_path / "plain"), tmp_path / "plain"), (f"file://{tmp_path}/url", tmp_path / "url")]:
        for _ in range(2):  # publishing again replaces the files
            published = cr.publish_dataset(dataset_id, url)
        assert published.url == f"{url}/{dataset_id}"
        target = folder / dataset_id
        assert sorted(p.name for p in target.iterdir()) == sorted(
            ["_SUCCESS", "dataset.json", *[f"{n}.parquet" for n in PARQUET]]
        )
        for name in PARQUET:
            assert_frame_equal(pl.read_parquet(target / f"{name}.parquet"), local_frame(cr, dataset_id, name))
        assert json.loads((target / "dataset.json").read_text())["id"] == dataset_id


def test_cli_publish(curated, tmp_path):
    """`curation publish`'s messages and exit codes, through typer's runner in this process (no subprocess per
    argument set); the settings it reads are the data root's alone, as in a shell with only CURATION_DATA_ROOT."""
    cr, dataset_id, _ = curated
    runner = CliRunner()
    with use_settings(Settings(data_root=cr.settings.data_root)):
        done = runner.invoke(cli.app, ["publish", dataset_id, str(tmp_path / "cli")])
        assert done.exit_code == 0, (done.output, done.exception)
        assert f"published to {tmp_path / 'cli'}/{dataset_id}" in done.stdout
        assert_frame_equal(
            pl.read_parquet(tmp_path / "cli" / dataset_id / "files.parquet"), local_frame(cr, dataset_id, "files")
        )

        done = runner.invoke(cli.app, ["publish", "0" * 24, str(tmp_path / "cli")])
    assert done.exit_code == 1 and "error:" in done.stderr and "no dataset 000000000000000000000000" in done.stderr


def test_publish_errors_name_the_url_without_credentials(curated, azurite):
    cr, dataset_id, container = curated
    wrong = azurite.connection_string.replace(azurite.account_key, WRONG_KEY)
    bad = Curation(settings=cr.settings.model_copy(update={"azure_connection_string": SecretStr(wrong)}))
    with pytest.raises(PublishError) as caught:
        bad.publish_dataset(dataset_id, f"abfs://{container}/refused")
    message = str(caught.value)
    assert f"abfs://{container}/refused/{dataset_id}" in message
    assert WRONG_KEY not in message and azurite.account_key not in message and "AccountKey=" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    with pytest.raises(ValueError, match="no output URL"):
        Curation(settings=cr.settings.model_copy(update={"output_url": None})).publish_dataset(dataset_id)


def test_display_url_drops_credentials():
    assert display_url("abfs://c@acct.dfs.core.windows.net/p?sv=1&sig=abc") == "abfs://c@acct.dfs.core.windows.net/p"
    assert display_url("s3://KEY:SECRET@bucket/x") == "s3://bucket/x"
    assert display_url("/data/out") == "/data/out"


def test_failed_publish_fails_the_curation_with_the_reason(tmp_path, azurite):
    write_images(tmp_path / "images", 31)
    wrong = azurite.connection_string.replace(azurite.account_key, WRONG_KEY)
    settings = Settings(
        data_root=tmp_path / "data",
        poll_interval_s=0.2,
        shard_size=16,
        output_url="abfs://refused/exports",
        azure_connection_string=SecretStr(wrong),
    )
    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset("unpublished", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed"
    assert record.failure_reason.startswith(f"could not publish dataset {dataset_id} to abfs://refused/exports/")
    assert WRONG_KEY not in record.failure_reason
    assert DatasetStore(settings.data_root, dataset_id).frame(Table.FILES).height == 31  # whole locally


def test_publishing_logs_no_credential(curated, azurite, captured_logs):
    cr, dataset_id, container = curated
    published = cr.publish_dataset(dataset_id, f"abfs://{container}/logged")
    assert published.url == f"abfs://{container}/logged/{dataset_id}"
    assert captured_logs.lines  # azure-core logs every request at DEBUG
    leaked = [line for line in captured_logs.lines if azurite.account_key in line or "AccountKey=" in line]
    assert leaked == []
