"""Image-dataset curation: tag, embed, analyse and sample image datasets from Azure Blob Storage or a folder."""

from __future__ import annotations

from curation.inference.client import AuthenticationError, ServiceError
from curation.dataset.registry import DatasetNotFound, DatasetRecord, DatasetType, DemoDatasetProtected, Status
from curation.sdk import Curation
from curation.settings import Settings, get_settings
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig, StorageError
from curation.ingest.validation import DatasetTooSmall
from curation.viewer.serve import launch_viewer

__all__ = [
    "AuthenticationError",
    "AzureStorageConfig",
    "Curation",
    "DatasetNotFound",
    "DatasetRecord",
    "DatasetTooSmall",
    "DatasetType",
    "DemoDatasetProtected",
    "LocalStorageConfig",
    "ServiceError",
    "Settings",
    "Status",
    "StorageError",
    "get_settings",
    "launch_viewer",
]
