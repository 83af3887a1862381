"""Helpers for integration tests: containers with generated images, and what a run left under the data root."""

from __future__ import annotations

import uuid
from pathlib import Path

from azure.storage.blob import BlobServiceClient, ContainerClient

from curation.dataset.catalog import Catalog
from curation.ingest.storage import AzureStorageConfig
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


def leftovers(root: Path) -> list[Path]:
    """What is under the data root beyond the catalog's root-level files (usage ledger, demo images): any file, and
    any folder below the top level (a dataset's, even an empty one). [] when the root does not exist."""
    catalog = Catalog(root)
    if not catalog.root.exists():
        return []
    kept = (catalog.usage_file, catalog.demo_images)
    return sorted(
        p for p in catalog.root.rglob("*")
        if not any(p.is_relative_to(k) for k in kept)
        and (p.is_file() or len(p.relative_to(catalog.root).parts) > 1)
    )
