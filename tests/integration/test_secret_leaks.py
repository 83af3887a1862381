"""No credential leaks: curate from Azurite with a connection string and with a container SAS, fail a few runs on
purpose, then search everything the runs left for every secret they were given.

Searched: every file under the data root, every log line (our code, Prefect, azure, httpx at DEBUG), the console
(stdout/stderr), Prefect's database (and its SQLite side files), and the text and traceback of each failure.
"""

from __future__ import annotations

import re
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote

import pytest
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from pydantic import SecretStr

from curation import Curation
from curation.ingest.storage import AzureStorageConfig, StorageError
from tests.integration.conftest import SERVICE_KEY
from tests.integration.helpers import new_container, upload_images
from tests.integration.test_curate_azure import SAS_SIGNATURE, prefect_database

WRONG_API_KEY = "wrong-service-key-2b9d41e07c"


def container_sas(azurite, container_name: str) -> str:
    return generate_container_sas(
        azurite.account_name, container_name, account_key=azurite.account_key,
        permission=ContainerSasPermissions(read=True, list=True), expiry=datetime.now(UTC) + timedelta(hours=1),
    )


def secret_needles(azurite, token: str) -> dict[str, str]:
    """Every secret, in each form it could be written in."""
    sig = parse_qs(token)["sig"][0]  # decoded base64 signature
    needles = {
        "account key": azurite.account_key,
        "account key (url-encoded)": quote(azurite.account_key, safe=""),
        "connection string": azurite.connection_string,
        "connection string AccountKey": f"AccountKey={azurite.account_key}",
        "SAS token": token,
        "SAS sig (decoded)": sig,
        "SAS sig (as in the token)": re.search(r"sig=([^&]+)", token).group(1),
        "service API key": SERVICE_KEY,
        "wrong API key": WRONG_API_KEY,
    }
    assert unquote(needles["SAS sig (as in the token)"]) == sig
    return needles


def database_files() -> list[Path]:
    db = prefect_database()
    return [p for p in db.parent.iterdir() if p.name.startswith(db.name)]  # the db and its -wal / -journal files


def test_no_secret_leaks_anywhere(azurite, settings, captured_logs, capfd):
    container = new_container(azurite)
    upload_images(container, 31, prefix="leak/")
    token = container_sas(azurite, container.container_name)
    needles = secret_needles(azurite, token)
    cr = Curation(settings=settings)

    # 1. A connection string credential.
    by_string = AzureStorageConfig(
        container_name=container.container_name, connection_string=SecretStr(azurite.connection_string), prefix="leak/"
    )
    first = cr.curate_dataset("by connection string", by_string, wait=True)
    # 2. A container SAS token.
    by_sas = AzureStorageConfig(
        container_name=container.container_name, account_name=azurite.account_name,
        account_url=azurite.blob_endpoint, sas_token=SecretStr(token), prefix="leak/",
    )
    second = cr.curate_dataset("by container SAS", by_sas, wait=True)
    for dataset_id in (first, second):
        record = cr.get_dataset(dataset_id)
        assert record.status.value == "Completed" and record.counts.processed == 31, record

    # 3. Failing runs: their exception texts must be clean too.
    failures: list[BaseException] = []
    missing = "no-such-container-1234"
    wrong = [
        by_string.model_copy(update={"container_name": missing}),
        by_sas.model_copy(update={"container_name": missing}),
        AzureStorageConfig(
            container_name=missing, account_name=azurite.account_name, account_url=azurite.blob_endpoint,
            account_key=SecretStr(azurite.account_key),
        ),
        # A connection string the SDK refuses (no account name): its message must not quote the string.
        AzureStorageConfig(
            container_name=container.container_name,
            connection_string=SecretStr(f"AccountKey={azurite.account_key};BlobEndpoint={azurite.blob_endpoint}"),
        ),
    ]
    for config in wrong:
        with pytest.raises(StorageError) as info:
            cr.curate_dataset("must fail", config, wait=True)
        failures.append(info.value)
    wrong_key = Curation(settings=settings.model_copy(update={"api_key": SecretStr(WRONG_API_KEY)}))
    with pytest.raises(Exception) as info:  # refused by the service before any dataset is registered
        wrong_key.curate_dataset("wrong api key", by_sas, wait=True)
    assert "401" in str(info.value)
    failures.append(info.value)
    assert "cannot list container 'no-such-container-1234'" in str(failures[0])

    # Where to look.
    out, err = capfd.readouterr()
    assert captured_logs.lines, "the log capture caught nothing"
    places: dict[str, bytes] = {
        f"data root: {p.relative_to(settings.data_root)}": p.read_bytes()
        for p in settings.data_root.rglob("*") if p.is_file()
    }
    assert any("files.parquet" in k for k in places) and any("dataset.json" in k for k in places)
    places["captured logs"] = "\n".join(captured_logs.lines).encode()
    places["stdout"], places["stderr"] = out.encode(), err.encode()
    for p in database_files():
        places[f"prefect database: {p.name}"] = p.read_bytes()
    for i, exc in enumerate(failures):
        places[f"failure {i}: {type(exc).__name__}"] = (
            f"{exc}\n{exc!r}\n{''.join(traceback.format_exception(exc))}".encode()
        )

    def context(data: bytes, at: int) -> str:
        return data[max(0, at - 150) : at + 60].decode(errors="replace")

    hits = [
        f"{what} in {where}: ...{context(data, data.find(needle.encode()))}..."
        for where, data in places.items()
        for what, needle in needles.items()
        if needle.encode() in data
    ]
    hits += [
        f"a SAS signature in {where}: ...{context(data, m.start())}..."
        for where, data in places.items()
        if (m := SAS_SIGNATURE.search(data))
    ]
    assert not hits, "\n".join(hits)
    print(f"leak check: {len(needles) + 1} secrets x {len(places)} places = {(len(needles) + 1) * len(places)} checks")
