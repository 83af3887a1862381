"""Helpers for integration tests: containers with generated images."""

from __future__ import annotations

import uuid

from azure.storage.blob import BlobServiceClient, ContainerClient

from curation.storage import AzureStorageConfig
from tests.azurite import AzuriteEndpoint
from tests.images import jpeg_bytes


def new_container(azurite: AzuriteEndpoint) -> ContainerClient:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return service.create_container(f"c-{uuid.uuid4().hex[:12]}")


def upload_images(container: ContainerClient, count: int, prefix: str = "") -> list[str]:
    names = []
    for i in range(count):
        name = f"{prefix}img_{i:04d}.{'png' if i % 7 == 0 else 'jpg'}"
        container.upload_blob(name, jpeg_bytes(i, fmt="PNG" if i % 7 == 0 else "JPEG"))
        names.append(name)
    return names


def azure_config(azurite: AzuriteEndpoint, container: ContainerClient, **extra) -> AzureStorageConfig:
    from pydantic import SecretStr

    return AzureStorageConfig(
        account_name=azurite.account_name,
        container_name=container.container_name,
        account_key=SecretStr(azurite.account_key),
        account_url=azurite.blob_endpoint,
        **extra,
    )
