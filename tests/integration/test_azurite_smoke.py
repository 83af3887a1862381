"""Smoke test: Azurite + azure-storage-blob + SAS download over plain HTTP."""

import uuid
from datetime import datetime, timedelta, timezone

import httpx
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, generate_blob_sas

from tests.azurite import AzuriteEndpoint


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
