"""Image-dataset curation: tag, embed, analyse and sample image datasets from Azure Blob Storage or a folder."""

from __future__ import annotations

from curation.client import AuthenticationError, ServiceError
from curation.registry import DatasetNotFound, DatasetRecord, DatasetType, DemoDatasetProtected, Status
from curation.sdk import Curation
from curation.settings import Settings, get_settings
from curation.storage import AzureStorageConfig, LocalStorageConfig, StorageError
from curation.validation import DatasetTooSmall
from curation.viewer import launch_viewer

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
