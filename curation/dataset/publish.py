"""Publish a Completed dataset's Parquet and record to any fsspec URL: abfs://, s3://, gs://, file://, a path."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fsspec
from fsspec.utils import get_protocol
from pydantic import SecretStr

from curation.dataset.catalog import RECORD_FILE, DatasetStore, Table
from curation.secrets import redact
from curation.settings import Settings

# The Parquet a reader of the dataset needs, in the order they are published; absent optional ones are skipped.
PARQUET = (Table.FILES, Table.METADATA, Table.EMBEDDINGS, Table.ANALYTICS, Table.SAMPLING)
REQUIRED = (Table.FILES, Table.METADATA)
MARKER = "_SUCCESS"  # written last: a folder without it is incomplete (Spark's convention)
AZURE_PROTOCOLS = {"abfs", "abfss", "az"}
SECRET_OPTIONS = ("connection_string", "account_key", "sas_token", "client_secret")


class PublishError(RuntimeError):
    """Publishing failed; the message names the URL without credentials."""


@dataclass(frozen=True)
class Published:
    """Where a dataset was published and what was written."""

    url: str  # the dataset's folder, credentials removed
    files: list[str]


def display_url(url: str) -> str:
    """The URL for messages: without user info (user:password@) or query string (a SAS token)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    # abfs://container@account.dfs.core.windows.net names a container before the @, not a user: keep it.
    if "@" in netloc and (parts.scheme not in AZURE_PROTOCOLS or ":" in netloc.split("@", 1)[0]):
        netloc = netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def storage_options(url: str, settings: Settings) -> dict[str, Any]:
    """fsspec options for the URL: the Azure credential settings for abfs/az URLs, none for the others. Azure AD is
    a service principal (CURATION_AZURE_TENANT_ID, _CLIENT_ID, _CLIENT_SECRET) or CURATION_AZURE_AD=true
    (DefaultAzureCredential); the identity needs Storage Blob Data Contributor on the target container.

    Other protocols (s3, gs, ...) find credentials the way their fsspec library does (environment, instance role).
    With an account key or SAS token, the account name comes from the URL (container@account.dfs.core.windows.net)
    or adlfs's AZURE_STORAGE_ACCOUNT_NAME; a connection string names it itself.
    """
    if get_protocol(url) not in AZURE_PROTOCOLS:
        return {}
    if settings.azure_connection_string:
        return {"connection_string": settings.azure_connection_string.get_secret_value()}
    if settings.azure_account_key:
        return {"account_key": settings.azure_account_key.get_secret_value()}
    if settings.azure_sas_token:
        return {"sas_token": settings.azure_sas_token.get_secret_value()}
    if settings.azure_client_secret is not None:  # Azure AD, a service principal
        return {"tenant_id": settings.azure_tenant_id, "client_id": settings.azure_client_id,
                "client_secret": settings.azure_client_secret.get_secret_value()}
    if settings.azure_ad:
        return {"anon": False}  # adlfs then signs in with DefaultAzureCredential
    return {}


def publish_dataset(store: DatasetStore, settings: Settings, url: str | None = None) -> Published:
    """Copy a Completed dataset's Parquet and its record (no secrets) to `<url>/<dataset_id>/`.

    Each file is uploaded under a temporary name and moved into place, and `_SUCCESS` (a JSON manifest) is written
    last and removed first on a re-publish, so a reader that checks for it never loads a half-published dataset.

    Args:
        store: a Completed dataset.
        settings: the Azure credential for abfs:// URLs, and the default URL.
        url: the root to publish under; default `settings.output_url`.
    Returns:
        The dataset folder's URL (credentials removed) and the names written.
    Raises:
        ValueError: no URL, or the dataset is not Completed. PublishError: the target refused or failed.
    """
    dataset_id = store.dataset_id
    url = url or settings.output_url
    if not url:
        raise ValueError("no output URL: pass one or set CURATION_OUTPUT_URL")
    record = store.require_completed("published")
    # Published under the names they have in the data root, so one reader serves both.
    local = {table: store.table_path(table) for table in PARQUET if store.has(table)}
    missing = [table.value for table in REQUIRED if table not in local]
    if missing:
        raise ValueError(f"dataset {dataset_id} has no {', '.join(missing)} Parquet to publish")
    shown = f"{display_url(url).rstrip('/')}/{dataset_id}"
    options = storage_options(url, settings)
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
        folder = f"{root.rstrip('/')}/{dataset_id}"
        fs.makedirs(folder, exist_ok=True)
        if fs.exists(f"{folder}/{MARKER}"):
            fs.rm_file(f"{folder}/{MARKER}")
        written = []
        for path in local.values():
            _write_atomic(fs, folder, path.name, lambda tmp, path=path: fs.put_file(str(path), tmp))
            written.append(path.name)
        record_json = record.model_dump_json(indent=2).encode()
        _write_atomic(fs, folder, RECORD_FILE, lambda tmp: fs.pipe_file(tmp, record_json))
        written.append(RECORD_FILE)
        manifest = json.dumps({"dataset_id": dataset_id, "files": written, "published": datetime.now(UTC).isoformat()})
        _write_atomic(fs, folder, MARKER, lambda tmp: fs.pipe_file(tmp, manifest.encode()))
    except Exception as exc:
        # The library's text can quote the connection string or a SAS; redact it, and drop the chained traceback.
        detail = redact(f"{type(exc).__name__}: {exc}", _secrets(settings, options))
        raise PublishError(f"could not publish dataset {dataset_id} to {shown}: {detail}") from None
    return Published(url=shown, files=written)


def _write_atomic(fs: fsspec.AbstractFileSystem, folder: str, name: str, write: Callable[[str], None]) -> None:
    """Write under a temporary name, then move into place (a rename locally, a server-side copy on blob stores)."""
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        write(tmp)
        fs.mv(tmp, f"{folder}/{name}")
    finally:
        if fs.exists(tmp):
            fs.rm_file(tmp)


def _secrets(settings: Settings, options: dict[str, Any]) -> list[SecretStr | str | None]:
    values: list[SecretStr | str | None] = [
        settings.azure_account_key,
        settings.azure_sas_token,
        settings.azure_connection_string,
    ]
    return values + [str(options[k]) for k in SECRET_OPTIONS if options.get(k)]
