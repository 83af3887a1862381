"""Credentials only in Prefect blocks: a curation from Azurite through the curate-dataset flow, with the Azure
account key in a CurationAzureCredentials block and the inference API key in a Secret block, no CURATION_AZURE_*
or CURATION_API_KEY in the environment, and neither secret in the flow runs' parameters or Prefect's database."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from prefect.blocks.system import Secret

from curation import Curation
from curation.dataset.catalog import Catalog
from curation.ingest.storage import AzureStorageConfig
from curation.tasks.blocks import CurationAzureCredentials, load_storage_credentials, settings_from_blocks
from tests.integration.conftest import SERVICE_KEY
from tests.integration.helpers import new_container, upload_images
from tests.integration.test_curate_azure import prefect_database


def flow_runs_parameters(flow_name: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))

    return [run.parameters for run in asyncio.run(read())]


def test_curate_from_azurite_with_credentials_only_in_blocks(azurite, settings, monkeypatch):
    for name in ("ACCOUNT_KEY", "SAS_TOKEN", "CONNECTION_STRING"):
        monkeypatch.delenv(f"CURATION_AZURE_{name}", raising=False)
    monkeypatch.delenv("CURATION_API_KEY", raising=False)
    suffix = uuid.uuid4().hex[:8]
    CurationAzureCredentials(
        account_name=azurite.account_name, account_url=azurite.blob_endpoint, account_key=azurite.account_key
    ).save(f"azurite-{suffix}")
    Secret(value=SERVICE_KEY).save(f"inference-key-{suffix}")
    container = new_container(azurite)
    upload_images(container, 31, prefix="blocks/")

    # Only block names: no credential in the storage parameter, none in the settings.
    storage = AzureStorageConfig(
        container_name=container.container_name, prefix="blocks/", credentials_block=f"azurite-{suffix}"
    )
    block_settings = settings.model_copy(update={"api_key": None, "api_key_block": f"inference-key-{suffix}"})
    assert settings_from_blocks(block_settings).api_key.get_secret_value() == SERVICE_KEY
    cr = Curation(settings=block_settings)
    dataset_id = cr.curate_dataset("from blocks", storage, wait=True)

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed" and record.counts.processed == 31, record
    assert record.storage["account_name"] == azurite.account_name  # taken from the block
    # A later run (track re-signing a lost shard, resume) rebuilds the storage from the record: same block, by name.
    from curation.ingest.steps import storage_of
    from curation.ingest.storage import open_storage
    from curation.tasks.curation_tasks import resolve_credentials

    rebuilt = resolve_credentials(storage_of(record))
    assert rebuilt.credentials_block == f"azurite-{suffix}"
    assert len(list(open_storage(rebuilt, block_settings).list_blobs())) == 31

    needles = [azurite.account_key, SERVICE_KEY]
    stored = Catalog(settings.data_root).dataset(dataset_id).load_record().model_dump_json()
    under_root = [(p, p.read_bytes()) for p in settings.data_root.rglob("*") if p.is_file()]
    runs = flow_runs_parameters("curate-dataset") + flow_runs_parameters("track-curation")
    parameters = json.dumps(runs, default=str)
    assert f"azurite-{suffix}" in parameters  # the block's name is a parameter, its value is not
    for needle in needles:
        assert needle not in parameters
        assert needle not in stored  # the record
        assert not [p for p, data in under_root if needle.encode() in data]  # nor any file of the data root
    # Prefect keeps block documents encrypted: the database file never holds the secret in clear.
    db = prefect_database()
    for path in [p for p in db.parent.iterdir() if p.name.startswith(db.name)]:
        data = path.read_bytes()
        assert not any(needle.encode() in data for needle in needles), path


def test_a_missing_block_is_a_clear_error_and_registers_nothing(settings):
    storage = AzureStorageConfig(container_name="drives", credentials_block=f"no-such-block-{uuid.uuid4().hex[:8]}")
    with pytest.raises(ValueError, match="no-such-block"):
        load_storage_credentials(storage)
    cr = Curation(settings=settings)
    with pytest.raises(ValueError, match="no-such-block"):
        cr.curate_dataset("missing block", storage, wait=True)
    assert cr.list_datasets() == []


def test_an_azure_ad_service_principal_from_blocks_signs_with_a_user_delegation_key():
    """Issue #17: a CurationAzureCredentials block (or a Secret block) can hold an Azure AD service principal; the
    config it fills uses Azure AD (a user delegation key signs each blob's read SAS), and the client secret never
    shows in the config's JSON, its repr or the storage descriptor a record keeps."""
    from pydantic import SecretStr, ValidationError

    from curation.ingest.storage import AzureBlobStorage, open_storage
    from curation.settings import Settings

    suffix = uuid.uuid4().hex[:8]
    secret = f"client-secret-{suffix}-not-real"
    CurationAzureCredentials(
        account_name="acct", tenant_id="tenant-1", client_id="app-1", client_secret=SecretStr(secret)
    ).save(f"principal-{suffix}")
    loaded = load_storage_credentials(AzureStorageConfig(container_name="c", credentials_block=f"principal-{suffix}"))
    assert loaded.uses_azure_ad() and (loaded.tenant_id, loaded.client_id, loaded.account_name) == ("tenant-1", "app-1", "acct")
    assert loaded.client_secret.get_secret_value() == secret
    storage = open_storage(loaded, Settings())
    assert isinstance(storage, AzureBlobStorage) and storage._service is not None and storage._key is None
    for text in (loaded.model_dump_json(), repr(loaded), json.dumps(storage.descriptor())):
        assert secret not in text
    assert storage.descriptor()["client_id"] == "app-1"

    # A Secret block holds the client secret when the config names the service principal.
    Secret(value=secret).save(f"principal-secret-{suffix}")
    config = AzureStorageConfig(
        container_name="c", account_name="acct", tenant_id="tenant-1", client_id="app-1",
        secret_block=f"principal-secret-{suffix}",
    )
    filled = load_storage_credentials(config)
    assert filled.client_secret.get_secret_value() == secret and filled.account_key is None

    with pytest.raises(ValidationError, match="exactly one"):
        CurationAzureCredentials(account_name="acct", account_key=SecretStr("k" * 20), azure_ad=True)
    with pytest.raises(ValidationError, match="tenant_id and client_id"):
        CurationAzureCredentials(account_name="acct", client_secret=SecretStr(secret))
