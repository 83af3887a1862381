"""Where images live: a local folder or an Azure Blob Storage container, behind one small interface."""

from __future__ import annotations

import os
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Field, SecretStr
from pydantic.json_schema import SkipJsonSchema

from curation.secrets import redact
from curation.settings import Settings


# Extra keyword arguments for the Azure SDK clients, e.g. {"retry_total": 1, "initial_backoff": 0.2,
# "connection_timeout": 2}. Empty: the SDK's defaults (3 retries from a 15 s backoff: about 85 s before a
# down endpoint is reported). Module-level because Settings has no field for it yet.
AZURE_CLIENT_KWARGS: dict[str, Any] = {}


class _NoSasInUrllib3Logs(logging.Filter):
    """The Azure SDK's transport (requests/urllib3) logs each request's path and query at DEBUG: mask the SAS."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_NoSasInUrllib3Logs())


class StorageError(RuntimeError):
    """Storage could not be reached or read; the message never holds a secret. `transient` says whether trying
    again may help (a connection error, 408, 429, 5xx), as against a missing container or a refused credential."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
SAS_PERMISSIONS = {"r": "read", "l": "list", "w": "write", "d": "delete", "a": "add", "c": "create", "t": "tag",
                   "x": "delete version", "y": "permanent delete", "m": "move", "e": "execute", "o": "ownership",
                   "p": "permissions", "i": "set immutability policy", "f": "filter"}


def require_read_list_sas(token: str) -> None:
    """Refuse a container SAS that grants more than read and list: the service receives it with every image URL
    (it cannot sign per blob), so it must not be able to change the container. The error never quotes the token."""
    from urllib.parse import parse_qs

    granted = parse_qs(token).get("sp", [""])[0]
    if not granted:
        raise StorageError("the Azure SAS token names no permissions (sp=): give a container SAS with read and list only")
    extra = [SAS_PERMISSIONS.get(letter, letter) for letter in granted if letter not in "rl"]
    if extra:
        raise StorageError(
            f"the Azure SAS token also grants {', '.join(extra)}: the inference service receives it with every image"
            " URL, so give a container SAS with read and list only (or an account key, which signs a read-only SAS"
            " per blob)"
        )


def is_transient(exc: BaseException) -> bool:
    """Whether an Azure SDK error may heal by trying again: no response at all, or a status that says so."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

    if isinstance(exc, (ServiceRequestError, ServiceResponseError, ConnectionError, TimeoutError)):
        return True
    return isinstance(exc, HttpResponseError) and getattr(exc, "status_code", None) in TRANSIENT_STATUS


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    etag: str | None = None  # change token: Azure's ETag, or mtime_ns-size of a local file (curate-new-blobs diffs it)
    unusable: str | None = None  # why the storage itself cannot serve this entry (validation rejects it with this)


class LocalStorageConfig(BaseModel):
    """A local folder of images, listed recursively. The embedded default."""

    kind: Literal["local"] = "local"
    path: Path
    prefix: str | None = None


class AzureStorageConfig(BaseModel):
    """An Azure Blob Storage container.

    Give exactly one credential: account_key, sas_token (a container SAS with read and list) or
    connection_string. Left empty, it is read from CURATION_AZURE_ACCOUNT_KEY / _SAS_TOKEN /
    _CONNECTION_STRING, or from the Prefect block named in credentials_block (a CurationAzureCredentials) or
    secret_block (a Secret holding the account key). account_url points the
    same config at Azurite or a sovereign cloud.
    """

    kind: Literal["azure"] = "azure"
    container_name: str
    account_name: str | None = None
    # exclude=True: a secret never serialises, so it cannot land in Prefect's parameters or any JSON.
    # SkipJsonSchema: the Prefect UI form shows no credential field.
    account_key: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    sas_token: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    connection_string: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    account_url: str | None = None
    prefix: str | None = None
    credentials_block: str | None = Field(
        default=None, description="Prefect block (curation-azure-credentials) holding the Azure credential"
    )
    secret_block: str | None = Field(default=None, description="Prefect Secret block holding the account key")

    def secrets(self) -> list[SecretStr]:
        return [s for s in (self.account_key, self.sas_token, self.connection_string) if s is not None]

    def with_env_credentials(self, settings: Settings) -> AzureStorageConfig:
        """Fill a missing credential from the settings (environment); given ones win."""
        if self.secrets():
            return self
        return self.model_copy(
            update={
                "account_key": settings.azure_account_key,
                "sas_token": settings.azure_sas_token,
                "connection_string": settings.azure_connection_string,
            }
        )


StorageConfig = Annotated[LocalStorageConfig | AzureStorageConfig, Field(discriminator="kind")]


class Storage(Protocol):
    def list_blobs(self) -> Iterator[BlobInfo]: ...
    def sign_url(self, name: str, expiry: datetime) -> str: ...
    def read_bytes(self, name: str) -> bytes: ...
    def descriptor(self) -> dict[str, Any]: ...


class LocalStorage:
    """A folder; URLs are file:// URIs, which only the embedded service may read."""

    def __init__(self, config: LocalStorageConfig) -> None:
        self.root = Path(config.path).expanduser().resolve()
        self.prefix = config.prefix or ""
        if not self.root.is_dir():
            raise StorageError(f"local storage folder does not exist: {self.root}")

    def list_blobs(self) -> Iterator[BlobInfo]:
        """Every file under the folder (recursively, hidden names skipped). A symlink that leads out of the folder
        is listed as unusable, so validation rejects that entry, not the dataset."""
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name.startswith(self.prefix) and not name.startswith("."):
                try:
                    self._path(name)
                except StorageError:
                    yield BlobInfo(name=name, size=0, unusable="symlink leads out of the storage folder")
                    continue
                stat = path.stat()
                yield BlobInfo(name=name, size=stat.st_size, etag=f"{stat.st_mtime_ns}-{stat.st_size}")

    def _path(self, name: str) -> Path:
        """The file of a blob name, refused when it resolves outside the folder (`..`, an absolute name, a symlink).

        The root is resolved once; a plain name (no `..`, no symlink on its way: one lstat per component of the
        name) is the root joined with it, as resolving would give. Anything else is resolved in full and checked:
        the same answer as `(root / name).resolve()`, without an lstat of every component of the root per blob."""
        current = str(self.root)
        for part in name.split("/") if not name.startswith("/") else [".."]:
            if part in ("", "."):
                continue
            if part != "..":
                current = f"{current}/{part}"
            if part == ".." or os.path.islink(current):
                path = (self.root / name).resolve()
                if not path.is_relative_to(self.root):
                    raise StorageError(f"blob name escapes the storage folder: {name!r}")
                return path
        return Path(current)

    def sign_url(self, name: str, expiry: datetime) -> str:
        return self._path(name).as_uri()

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def descriptor(self) -> dict[str, Any]:
        return {"kind": "local", "path": str(self.root), "prefix": self.prefix or None}


class AzureBlobStorage:
    """A container, read with azure-storage-blob. The credential is used to list, read and sign only."""

    def __init__(self, config: AzureStorageConfig, page_size: int = 5000) -> None:
        from azure.storage.blob import BlobServiceClient, ContainerClient

        given = config.secrets()
        if len(given) != 1:
            raise StorageError(
                "Azure storage needs exactly one credential (account_key, sas_token or connection_string), "
                f"got {len(given)}; set one, e.g. CURATION_AZURE_ACCOUNT_KEY"
            )
        self.config = config
        self.page_size = page_size
        self._secrets = given
        try:
            if config.connection_string is not None:
                service = BlobServiceClient.from_connection_string(
                    config.connection_string.get_secret_value(), **AZURE_CLIENT_KWARGS
                )
                self.account_name = service.account_name
                self._key = service.credential.account_key
                self.container = service.get_container_client(config.container_name)
            else:
                if not config.account_name and not config.account_url:
                    raise StorageError("Azure storage needs account_name or account_url")
                url = config.account_url or f"https://{config.account_name}.blob.core.windows.net"
                credential: Any
                if config.account_key is not None:
                    self._key = config.account_key.get_secret_value()
                    credential = {"account_name": config.account_name, "account_key": self._key}
                else:
                    self._key = None
                    credential = config.sas_token.get_secret_value().lstrip("?")  # type: ignore[union-attr]
                    require_read_list_sas(credential)
                self.container = ContainerClient(url, config.container_name, credential=credential, **AZURE_CLIENT_KWARGS)
                self.account_name = config.account_name or self.container.account_name
        except StorageError:
            raise
        except Exception as exc:  # the SDK's messages can quote the credential: never pass them on raw
            raise StorageError(
                f"cannot open Azure container {config.container_name!r}: {self._clean(exc)}", is_transient(exc)
            ) from None

    def _clean(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)

    def list_blobs(self) -> Iterator[BlobInfo]:
        try:
            blobs = self.container.list_blobs(name_starts_with=self.config.prefix or None, results_per_page=self.page_size)
            for page in blobs.by_page():
                for blob in page:
                    yield BlobInfo(name=blob.name, size=int(blob.size or 0), etag=blob.etag)
        except Exception as exc:
            raise StorageError(
                f"cannot list container {self.config.container_name!r}: {self._clean(exc)}", is_transient(exc)
            ) from None

    def sign_url(self, name: str, expiry: datetime) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        url = self.container.get_blob_client(name).url.split("?", 1)[0]
        if self._key is None:  # a container SAS given by the user: reuse it, it cannot sign another
            return f"{url}?{self.config.sas_token.get_secret_value().lstrip('?')}"  # type: ignore[union-attr]
        token = generate_blob_sas(
            account_name=self.account_name,
            container_name=self.config.container_name,
            blob_name=name,
            account_key=self._key,
            permission=BlobSasPermissions(read=True),
            start=datetime.now(UTC) - timedelta(minutes=5),
            expiry=expiry,
        )
        return f"{url}?{token}"

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.container.download_blob(name).readall()
        except Exception as exc:
            raise StorageError(f"cannot read blob {name!r}: {self._clean(exc)}") from None

    def descriptor(self) -> dict[str, Any]:
        return {
            "kind": "azure",
            "account_name": self.account_name,
            "container_name": self.config.container_name,
            "account_url": self.config.account_url,
            "prefix": self.config.prefix,
            # Block NAMES (never their values): a later run (track, resume) loads the same credentials.
            "credentials_block": self.config.credentials_block,
            "secret_block": self.config.secret_block,
        }


def open_storage(config: LocalStorageConfig | AzureStorageConfig, settings: Settings) -> Storage:
    """The storage for a config; Azure credentials missing from the config come from the settings."""
    if isinstance(config, LocalStorageConfig):
        return LocalStorage(config)
    return AzureBlobStorage(config.with_env_credentials(settings), page_size=settings.azure_list_page_size)


def sas_expiry(settings: Settings, now: datetime | None = None) -> datetime:
    """When signed URLs expire: long enough to cover the job, bounded by the setting."""
    return (now or datetime.now(UTC)) + timedelta(minutes=settings.sas_expiry_minutes)
