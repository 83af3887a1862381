"""Smoke tests: Azurite + azure-storage-blob + SAS download over plain HTTP; Azure AD over HTTPS."""

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from tests.azurite import AzuriteEndpoint, run_azurite


def test_azurite_blob_roundtrip_and_sas(azurite: AzuriteEndpoint) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container_name = f"smoke-{uuid.uuid4().hex[:12]}"
    container = service.create_container(container_name)

    blobs = {"top.txt": b"top", "a/b/nested.txt": b"nested", "a/other.txt": b"other"}
    for name, data in blobs.items():
        container.upload_blob(name, data)

    assert sorted(b.name for b in container.list_blobs()) == sorted(blobs)
    assert [b.name for b in container.list_blobs(name_starts_with="a/b/")] == ["a/b/nested.txt"]

    blob_client = container.get_blob_client("a/b/nested.txt")
    assert blob_client.url == f"{azurite.blob_endpoint}/{container_name}/a/b/nested.txt"

    sas = generate_blob_sas(
        account_name=azurite.account_name,
        container_name=container_name,
        blob_name="a/b/nested.txt",
        account_key=azurite.account_key,
        permission=BlobSasPermissions(read=True),
        expiry=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    with httpx.Client(timeout=10) as http:
        signed = http.get(f"{blob_client.url}?{sas}")
        assert signed.status_code == 200, signed.text
        assert signed.content == b"nested"

        anonymous = http.get(blob_client.url)
        assert anonymous.status_code != 200
        assert anonymous.status_code in (403, 404), anonymous.text


# --- Azure AD: a token lists the container; a user delegation key signs one blob's read-only SAS -----------------


class AzuriteToken:
    """A TokenCredential whose tokens Azurite's `--oauth basic` accepts (it checks issuer, audience and lifetime)."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: object):
        from azure.core.credentials import AccessToken

        from tests.azurite import azure_ad_token

        self.calls += 1
        return AccessToken(*azure_ad_token())


@pytest.fixture(scope="module")
def azurite_oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEndpoint]:
    """Azurite over HTTPS (a self-signed certificate) with bearer tokens and user delegation keys."""
    with run_azurite(tmp_path_factory.mktemp("azurite-oauth"), oauth=True) as endpoint:
        yield endpoint


@pytest.fixture
def azure_ad_storage(azurite_oauth, monkeypatch):
    """A container of three blobs, opened with Azure AD (a token Azurite accepts instead of DefaultAzureCredential)."""
    from curation.ingest import storage
    from curation.ingest.storage import AzureStorageConfig, open_storage
    from curation.settings import Settings

    verify = str(azurite_oauth.cert)
    monkeypatch.setattr(storage, "AZURE_CLIENT_KWARGS", {"connection_verify": verify})
    token = AzuriteToken()
    monkeypatch.setattr(storage, "azure_ad_credential", lambda config: token)
    service = BlobServiceClient.from_connection_string(azurite_oauth.connection_string, connection_verify=verify)
    container = service.create_container(f"ad-{uuid.uuid4().hex[:12]}")
    for name, data in AD_BLOBS.items():
        container.upload_blob(name, data)
    config = AzureStorageConfig(
        account_name=azurite_oauth.account_name, container_name=container.container_name,
        account_url=azurite_oauth.blob_endpoint, azure_ad=True,
    )
    return open_storage(config, Settings()), token, f"{azurite_oauth.blob_endpoint}/{container.container_name}"


AD_BLOBS = {"a.jpg": b"image a", "b.jpg": b"image b", "dir/c.jpg": b"image c"}


def test_azure_ad_lists_with_a_token_and_signs_with_a_user_delegation_key(azure_ad_storage, azurite_oauth):
    """Issue #17: Azure AD lists the container with a bearer token and gets a user delegation key from the service;
    each image URL is a read SAS for its own blob signed with that key, never with the account key."""
    from curation.ingest.storage import sas_expiry
    from curation.settings import Settings

    opened, token, container_url = azure_ad_storage
    assert sorted(b.name for b in opened.list_blobs()) == sorted(AD_BLOBS) and token.calls >= 1
    url = opened.sign_url("a.jpg", sas_expiry(Settings()))
    base, sas = url.split("?", 1)
    assert base == f"{container_url}/a.jpg"
    # skoid: the token's object id, as Azurite returned it in the user delegation key
    assert "skoid=5f0c6a8e-1c1f-4c55-9e6b-0b7f5d3f0a11&" in sas and "sp=r&" in sas and "sr=b&" in sas
    assert azurite_oauth.account_key not in url
    opened.sign_url("dir/c.jpg", sas_expiry(Settings()))
    key, until = opened._delegation
    assert key.value and until >= sas_expiry(Settings())  # one key, valid past the SAS expiry


# Azure's string-to-sign of a user delegation SAS gained two lines (srh, srq) in service version 2026-04-06, which
# azure-storage-blob 12.31 signs; Azurite validates that version from 3.37.0 on, the version package.json pins.


def test_a_user_delegation_sas_reads_exactly_one_blob_and_cannot_list_or_write(azure_ad_storage, azurite_oauth):
    """Issue #17: the service gets a SAS that reads one blob: not another, not a listing, not a write."""
    from curation.ingest.storage import sas_expiry
    from curation.settings import Settings

    opened, _, container_url = azure_ad_storage
    url = opened.sign_url("a.jpg", sas_expiry(Settings()))
    sas = url.split("?", 1)[1]
    with httpx.Client(timeout=10, verify=str(azurite_oauth.cert)) as http:
        read = http.get(url)
        assert read.status_code == 200 and read.content == b"image a", read.text  # exactly this blob
        assert http.get(f"{container_url}/b.jpg?{sas}").status_code == 403  # not another one
        assert http.get(f"{container_url}?restype=container&comp=list&{sas}").status_code == 403  # nor a listing
        written = http.put(url, content=b"changed", headers={"x-ms-blob-type": "BlockBlob"})
        assert written.status_code == 403, written.text  # nor a write
        assert http.get(url.replace("sig=", "sig=AAAA")).status_code == 403  # the signature is checked
        assert http.get(url).content == b"image a"
        assert http.get(opened.sign_url("dir/c.jpg", sas_expiry(Settings()))).content == b"image c"
