"""Where images live: a local folder or an Azure Blob Storage container, behind one small interface."""

from __future__ import annotations

import os
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.json_schema import SkipJsonSchema

from curation.secrets import redact
from curation.settings import Settings


# The Azure SDK clients' retries and timeouts. The SDK's defaults (3 retries from a 15 s backoff, a 20 s connection
# timeout) took minutes to report an unreachable endpoint. Here a connection that cannot be made is tried 3 times
# (5 s each at most, 1 s and 3 s apart, +-1 s of jitter): about 20 s, never more than 23 s, before it is reported;
# a 5xx or 429 mid-run is still retried 3 times. The list-images task does not retry an unreachable endpoint again.
AZURE_RETRIES_AND_TIMEOUTS: dict[str, Any] = {
    "retry_total": 3,
    "retry_connect": 2,  # 3 attempts to connect
    "retry_read": 2,
    "retry_status": 3,  # 408, 429, 5xx: 4 attempts
    "initial_backoff": 1,
    "increment_base": 2,  # backoff before retry n: initial_backoff + increment_base**n (n > 0)
    "random_jitter_range": 1,
    "connection_timeout": 5,
    "read_timeout": 30,  # between bytes of a response (a listing page, a blob)
}
# Extra keyword arguments for the Azure SDK clients, over the ones above, e.g. {"retry_total": 1}. Module-level
# because Settings has no field for them.
AZURE_CLIENT_KWARGS: dict[str, Any] = {}
# A user delegation key is valid at most 7 days; one is fetched per run, valid until a day past the SAS expiry.
DELEGATION_KEY_MAX = timedelta(days=7) - timedelta(minutes=5)
DELEGATION_KEY_SPARE = timedelta(days=1)
CLOCK_SKEW = timedelta(minutes=5)


def azure_client_kwargs() -> dict[str, Any]:
    """Keyword arguments for every Azure SDK client: the retries and timeouts above, then any override."""
    return {**AZURE_RETRIES_AND_TIMEOUTS, **AZURE_CLIENT_KWARGS}


class _NoSasInUrllib3Logs(logging.Filter):
    """The Azure SDK's transport (requests/urllib3) logs each request's path and query at DEBUG: mask the SAS."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_NoSasInUrllib3Logs())


class StorageError(RuntimeError):
    """Storage could not be reached or read; the message never holds a secret. `transient` says whether trying
    again may help (a connection error, 408, 429, 5xx), as against a missing container or a refused credential;
    `unreachable` that no connection could be made even after the client's own retries."""

    def __init__(self, message: str, transient: bool = False, unreachable: bool = False) -> None:
        super().__init__(message)
        self.transient = transient or unreachable
        self.unreachable = unreachable

    def __reduce__(self) -> tuple[Any, ...]:  # keep the flags across processes (Dask) and Prefect's state
        return type(self), (str(self), self.transient, self.unreachable)


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


AZURE_AD_HINT = ("sign in with `az login`, run where a managed identity is assigned, or set CURATION_AZURE_TENANT_ID, "
                 "CURATION_AZURE_CLIENT_ID and CURATION_AZURE_CLIENT_SECRET for a service principal; or use an account "
                 "key or SAS instead of Azure AD")
AZURE_AD_ROLES = ("the identity needs the Storage Blob Data Reader role on the container, and Storage Blob Delegator "
                  "on the account to sign image URLs")


def azure_ad_failure(exc: BaseException) -> str | None:
    """What to tell a user of Azure AD for an authentication error: no token at all (the credential chain's first
    line, and how to sign in; its full report, ~15 lines per try, is logged by azure.identity), or a token the
    storage refused (the roles it needs). None for any other error."""
    from azure.core.exceptions import ClientAuthenticationError

    if not isinstance(exc, ClientAuthenticationError):
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    if getattr(exc, "status_code", None) is None:  # raised by the credential: no request was answered
        return f"Azure AD sign-in failed ({first}): {AZURE_AD_HINT}"
    return f"the storage refused the Azure AD token (HTTP {exc.status_code}: {first}); {AZURE_AD_ROLES}"


def is_unreachable(exc: BaseException) -> bool:
    """Whether an Azure SDK error says no connection could be made (refused, timed out, no such host)."""
    from azure.core.exceptions import ServiceRequestError

    return isinstance(exc, ServiceRequestError)


def _connection_failure(exc: BaseException) -> str:
    """Why a connection failed, in a few words ("Connection refused", "timed out"), from the SDK's long message."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\"()\]\n]+)", text)
    if errno:
        return errno.group(1).strip().rstrip(".")
    if "timed out" in text.lower():
        return "timed out"
    if "SSL" in text or "CERTIFICATE" in text:
        return "TLS handshake failed: check the endpoint's certificate"
    return type(exc).__name__


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    etag: str | None = None  # change token: Azure's ETag, or mtime_ns-size of a local file (curate-new-blobs diffs it)
    unusable: str | None = None  # why the storage itself cannot serve this entry (validation rejects it with this)


class LocalStorageConfig(BaseModel):
    """A folder of images on the worker's machine, listed recursively."""

    model_config = ConfigDict(title="Local folder")  # the storage choice as the Prefect UI form names it

    kind: Literal["local"] = Field(default="local", description="local: a folder on the worker's machine")
    path: Path = Field(description="Absolute path of the folder on the worker's machine, e.g. /data/images")
    prefix: str | None = Field(default=None, description="Only files under this sub-folder, e.g. 2024/06/ (empty: all)")


class AzureStorageConfig(BaseModel):
    """An Azure Blob Storage container. Credentials are never given here: they come from the Prefect block named in
    credentials_block, a Secret block named in secret_block, or the worker's CURATION_AZURE_* environment.
    """

    # The docstring above is the Prefect form's description, so it names only what the form shows. From Python, a
    # config may hold exactly one credential: account_key, sas_token (a container SAS with read and list),
    # connection_string, or Azure AD: azure_ad=True (DefaultAzureCredential) or a service principal (tenant_id,
    # client_id, client_secret). With Azure AD each blob's read-only SAS is signed with a user delegation key. Left
    # empty, it is read from CURATION_AZURE_ACCOUNT_KEY / _SAS_TOKEN / _CONNECTION_STRING / _AD / _CLIENT_SECRET, or
    # from the block named in credentials_block (a CurationAzureCredentials) or secret_block (a Secret holding the
    # account key, or the client secret when client_id is set). account_url points it at Azurite or a sovereign cloud.
    model_config = ConfigDict(title="Azure Blob Storage")  # the storage choice as the Prefect UI form names it

    kind: Literal["azure"] = Field(default="azure", description="azure: a container in an Azure storage account")
    container_name: str = Field(description="The blob container that holds the images, e.g. driving-images")
    account_name: str | None = Field(
        default=None,
        description="Storage account; leave empty with credentials_block: the block's account is used (another one "
        "here is an error)",
    )
    # exclude=True: a secret never serialises, so it cannot land in Prefect's parameters or any JSON.
    # SkipJsonSchema: the Prefect UI form shows no credential field.
    account_key: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    sas_token: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    connection_string: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    client_secret: SkipJsonSchema[SecretStr | None] = Field(default=None, exclude=True)
    azure_ad: bool = Field(
        default=False,
        description="Sign in with Azure AD (DefaultAzureCredential, or the service principal below); each image gets "
        "a read-only SAS signed with a user delegation key",
    )
    tenant_id: str | None = Field(default=None, description="Azure AD tenant of the service principal")
    client_id: str | None = Field(default=None, description="Application (client) id of the service principal")
    account_url: str | None = Field(
        default=None,
        description="Account endpoint, for Azurite (http://127.0.0.1:10000/devstoreaccount1) or a sovereign cloud; "
        "leave empty with credentials_block: the block's endpoint is used",
    )
    prefix: str | None = Field(default=None, description="Only blobs whose names start with this, e.g. 2024/06/")
    credentials_block: str | None = Field(
        default=None,
        description="Name of the Curation Azure Credentials block that holds the account and its credential",
    )
    secret_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the storage account's key (or the service "
        "principal's secret when client_id is set)"
    )

    def secrets(self) -> list[SecretStr]:
        return [
            s for s in (self.account_key, self.sas_token, self.connection_string, self.client_secret) if s is not None
        ]

    def uses_azure_ad(self) -> bool:
        """Whether the credential is Azure AD: DefaultAzureCredential, or a service principal's client secret."""
        return self.azure_ad or self.client_secret is not None

    def credentials_given(self) -> int:
        """How many credentials the config holds (Azure AD counts once): exactly one is valid."""
        keys = [s for s in (self.account_key, self.sas_token, self.connection_string) if s is not None]
        return len(keys) + int(self.uses_azure_ad())

    def with_env_credentials(self, settings: Settings) -> AzureStorageConfig:
        """Fill a missing credential from the settings (environment); given ones win. A config that asks for Azure
        AD takes only a service principal from the settings."""
        if self.secrets():
            return self
        principal = {
            "client_secret": settings.azure_client_secret,
            "tenant_id": self.tenant_id or settings.azure_tenant_id,
            "client_id": self.client_id or settings.azure_client_id,
        }
        if self.azure_ad:
            return self.model_copy(update=principal) if settings.azure_client_secret is not None else self
        return self.model_copy(
            update={
                "account_key": settings.azure_account_key,
                "sas_token": settings.azure_sas_token,
                "connection_string": settings.azure_connection_string,
                "azure_ad": settings.azure_ad,
                **principal,
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
        """Every file under the folder (recursively; hidden ones too, which validation rejects as Azure's). A
        symlink that leads out of the folder is listed as unusable, so validation rejects that entry, not the
        dataset."""
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name.startswith(self.prefix):
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


def azure_ad_credential(config: AzureStorageConfig) -> Any:
    """The Azure AD token credential a config names: its service principal, else DefaultAzureCredential."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if config.client_secret is None:
        return DefaultAzureCredential()
    if not (config.tenant_id and config.client_id):
        raise StorageError("an Azure AD client_secret needs tenant_id and client_id (a service principal)")
    return ClientSecretCredential(config.tenant_id, config.client_id, config.client_secret.get_secret_value())


class AzureBlobStorage:
    """A container, read with azure-storage-blob. The credential is used to list, read and sign only: every image
    URL carries a read-only SAS for its own blob (signed with the account key, or with a user delegation key under
    Azure AD), except with a user's container SAS, which is appended as it is."""

    def __init__(self, config: AzureStorageConfig, page_size: int = 5000, token_credential: Any = None) -> None:
        """token_credential: an Azure AD credential to use instead of the one the config names (azure_ad=True)."""
        from azure.storage.blob import BlobServiceClient, ContainerClient

        given = config.credentials_given()
        if given != 1:
            raise StorageError(
                "Azure storage needs exactly one credential (account_key, sas_token, connection_string, or Azure "
                f"AD: azure_ad or a service principal's client_secret), got {given}; set one, e.g. "
                "CURATION_AZURE_ACCOUNT_KEY"
            )
        self.config = config
        self.page_size = page_size
        self._secrets = config.secrets()
        self._service: Any = None  # with Azure AD: the client that asks for user delegation keys
        self._delegation: tuple[Any, datetime] | None = None  # the user delegation key and its expiry
        self._delegation_lock = threading.Lock()
        kwargs = azure_client_kwargs()
        try:
            if config.connection_string is not None:
                connection = config.connection_string.get_secret_value()
                service = BlobServiceClient.from_connection_string(connection, **kwargs)
                self.account_name = service.account_name
                self._key = service.credential.account_key
                self.container = service.get_container_client(config.container_name)
            else:
                if not config.account_name and not config.account_url:
                    raise StorageError("Azure storage needs account_name or account_url")
                url = config.account_url or f"https://{config.account_name}.blob.core.windows.net"
                credential: Any
                self._key = None
                if config.account_key is not None:
                    self._key = config.account_key.get_secret_value()
                    credential = {"account_name": config.account_name, "account_key": self._key}
                elif config.uses_azure_ad():
                    credential = token_credential or azure_ad_credential(config)
                    self._service = BlobServiceClient(url, credential=credential, **kwargs)
                else:
                    credential = config.sas_token.get_secret_value().lstrip("?")  # type: ignore[union-attr]
                    require_read_list_sas(credential)
                if self._service is not None:
                    self.container = self._service.get_container_client(config.container_name)
                else:
                    self.container = ContainerClient(url, config.container_name, credential=credential, **kwargs)
                self.account_name = config.account_name or self.container.account_name
        except StorageError:
            raise
        except Exception as exc:  # the SDK's messages can quote the credential: never pass them on raw
            raise self._error(f"cannot open Azure container {config.container_name!r}", exc) from None

    def _clean(self, exc: BaseException) -> str:
        return redact(f"{type(exc).__name__}: {exc}", self._secrets)

    def _error(self, what: str, exc: BaseException) -> StorageError:
        """A StorageError for an SDK error, without a secret; one line naming the endpoint when it is unreachable."""
        if is_unreachable(exc):
            container = getattr(self, "container", None)
            parts = urlsplit(self.config.account_url or (container.url if container is not None else ""))
            endpoint = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the Azure storage endpoint"
            reason = redact(_connection_failure(exc), self._secrets)
            return StorageError(f"{what}: could not reach {endpoint} ({reason})", unreachable=True)
        if self.config.uses_azure_ad():
            signed_in = azure_ad_failure(exc)
            if signed_in is not None:
                return StorageError(f"{what}: {redact(signed_in, self._secrets)}")
        return StorageError(f"{what}: {self._clean(exc)}", is_transient(exc))

    def list_blobs(self) -> Iterator[BlobInfo]:
        try:
            blobs = self.container.list_blobs(name_starts_with=self.config.prefix or None, results_per_page=self.page_size)
            for page in blobs.by_page():
                for blob in page:
                    yield BlobInfo(name=blob.name, size=int(blob.size or 0), etag=blob.etag)
        except Exception as exc:
            raise self._error(f"cannot list container {self.config.container_name!r}", exc) from None

    def user_delegation_key(self, expiry: datetime) -> Any:
        """A user delegation key valid past `expiry`: fetched once, again only when a SAS would outlive it."""
        with self._delegation_lock:
            if self._delegation is not None and self._delegation[1] >= expiry:
                return self._delegation[0]
            now = datetime.now(UTC)
            until = min(now + DELEGATION_KEY_MAX, max(expiry, now) + DELEGATION_KEY_SPARE)
            if until < expiry:
                raise StorageError(
                    "with Azure AD a signed URL can be valid 7 days at most: lower CURATION_SAS_EXPIRY_MINUTES"
                )
            try:
                key = self._service.get_user_delegation_key(now - CLOCK_SKEW, until)
            except Exception as exc:
                raise self._error(
                    f"cannot get a user delegation key for account {self.account_name!r} (Azure AD needs a role"
                    " with generateUserDelegationKey, e.g. Storage Blob Data Reader)",
                    exc,
                ) from None
            self._delegation = (key, until)
            return key

    def sign_url(self, name: str, expiry: datetime) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        url = self.container.get_blob_client(name).url.split("?", 1)[0]
        signing: dict[str, Any]
        if self._service is not None:  # Azure AD: a read SAS for this blob, signed with a user delegation key
            signing = {"user_delegation_key": self.user_delegation_key(expiry)}
        elif self._key is None:  # a container SAS given by the user: reuse it, it cannot sign another
            return f"{url}?{self.config.sas_token.get_secret_value().lstrip('?')}"  # type: ignore[union-attr]
        else:
            signing = {"account_key": self._key}
        token = generate_blob_sas(
            account_name=self.account_name,
            container_name=self.config.container_name,
            blob_name=name,
            permission=BlobSasPermissions(read=True),
            start=datetime.now(UTC) - CLOCK_SKEW,
            expiry=expiry,
            **signing,
        )
        return f"{url}?{token}"

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.container.download_blob(name).readall()
        except Exception as exc:
            raise self._error(f"cannot read blob {name!r}", exc) from None

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
            # Azure AD: whether it signs, and which service principal (ids, never its secret).
            "azure_ad": self.config.azure_ad,
            "tenant_id": self.config.tenant_id,
            "client_id": self.config.client_id,
        }


def open_storage(config: LocalStorageConfig | AzureStorageConfig, settings: Settings) -> Storage:
    """The storage for a config; Azure credentials missing from the config come from the settings."""
    if isinstance(config, LocalStorageConfig):
        return LocalStorage(config)
    return AzureBlobStorage(config.with_env_credentials(settings), page_size=settings.azure_list_page_size)


def sas_expiry(settings: Settings, now: datetime | None = None) -> datetime:
    """When signed URLs expire: long enough to cover the job, bounded by the setting."""
    return (now or datetime.now(UTC)) + timedelta(minutes=settings.sas_expiry_minutes)
