"""Credentials from Prefect blocks: the Azure credential of a container and the inference service's API key.

prefect-azure's AzureBlobStorageCredentials holds a connection string or an account URL for
DefaultAzureCredential, but no account key or SAS token (an account key signs our per-blob read SAS), and it
installs prefect-docker and azure-mgmt-* with it; this block is the small one we need.

Register the block type once per Prefect server with `prefect block register -m curation.tasks.blocks`
(`.save()` registers it too). `python -m curation.tasks.blocks NAME` saves one from the AZURE_STORAGE_* environment.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from prefect.blocks.core import Block, schema_extra
from pydantic import ConfigDict, Field, SecretStr, model_validator

from curation.settings import Settings, get_settings, use_settings
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig

F = TypeVar("F", bound=Callable[..., Any])
StorageConfig = LocalStorageConfig | AzureStorageConfig


def _block_schema(schema: dict[str, Any], model: type[Block]) -> None:
    """Prefect's block schema, refusing an object that is a block reference: the form sends {"$ref": {...}} for a
    picked block, and the server accepts it only when exactly one of its two schemas (the block's, Prefect's
    reference) matches. Every field here being optional, the block's would match it too."""
    schema_extra(schema, model)
    schema["not"] = {"required": ["$ref"]}


class CurationAzureCredentials(Block):
    """Azure Blob Storage credentials for curation: exactly one of account key, container SAS, connection string or
    Azure AD (azure_ad=True for DefaultAzureCredential, or a service principal's tenant_id, client_id and
    client_secret; each image's read-only SAS is then signed with a user delegation key).

    Example:
        CurationAzureCredentials(account_name="myaccount", account_key="...").save("curation-azure")
        CurationAzureCredentials(account_name="myaccount", tenant_id="...", client_id="...", client_secret="...")
    """

    model_config = ConfigDict(json_schema_extra=_block_schema)

    _block_type_name = "Curation Azure Credentials"
    _block_type_slug = "curation-azure-credentials"
    _description = (
        "An Azure storage account key, container SAS (read+list), connection string or Azure AD sign-in for curation."
    )

    account_name: str | None = Field(default=None, description="Storage account (not needed with a connection string)")
    account_url: str | None = Field(default=None, description="Account endpoint, e.g. Azurite's or a sovereign cloud's")
    account_key: SecretStr | None = Field(default=None, description="Account key: lists, reads and signs per-blob SAS")
    sas_token: SecretStr | None = Field(default=None, description="A container SAS with read and list permissions")
    connection_string: SecretStr | None = Field(default=None, description="A connection string with an account key")
    azure_ad: bool = Field(default=False, description="Sign in with DefaultAzureCredential (managed identity, CLI)")
    tenant_id: str | None = Field(default=None, description="Azure AD tenant of a service principal")
    client_id: str | None = Field(default=None, description="Application (client) id of a service principal")
    client_secret: SecretStr | None = Field(default=None, description="The service principal's client secret")

    @model_validator(mode="after")
    def _exactly_one_credential(self) -> CurationAzureCredentials:
        given = [s for s in (self.account_key, self.sas_token, self.connection_string) if s is not None]
        given += [True] if self.azure_ad or self.client_secret is not None else []
        if len(given) != 1:
            raise ValueError(
                "give exactly one of account_key, sas_token, connection_string or Azure AD (azure_ad, or tenant_id,"
                f" client_id and client_secret) (got {len(given)})"
            )
        if self.client_secret is not None and not (self.tenant_id and self.client_id):
            raise ValueError("a client_secret needs tenant_id and client_id")
        if self.connection_string is None and not (self.account_name or self.account_url):
            raise ValueError("an account key, SAS token or Azure AD needs account_name or account_url")
        return self

    def apply_to(self, config: AzureStorageConfig, name: str | None = None) -> AzureStorageConfig:
        """The config with this block's credential, account name and endpoint (the config may leave them empty).

        Args:
            config: a storage config without a credential of its own.
            name: the block's name, for the error message.
        Returns:
            A copy holding the credential (never serialised: its fields are excluded).
        Raises:
            BlockConflict: the config names another account or endpoint than the block's: the credential is the
                block's, so the run would sign for one account and read another (Azure refuses it).
        """
        require_no_conflict(self, config, name or config.credentials_block or "the credentials block")
        return config.model_copy(
            update={
                "account_key": self.account_key,
                "sas_token": self.sas_token,
                "connection_string": self.connection_string,
                "client_secret": self.client_secret,
                "azure_ad": self.azure_ad,
                "tenant_id": config.tenant_id or self.tenant_id,
                "client_id": config.client_id or self.client_id,
                "account_name": config.account_name or self.account_name,
                "account_url": config.account_url or self.account_url,
            }
        )


class BlockConflict(ValueError):
    """The run's storage config names another account or endpoint than its credentials block."""


def require_no_conflict(block: CurationAzureCredentials, config: AzureStorageConfig, name: str) -> None:
    """Refuse a config whose non-empty account_name or account_url differs from the block's; the message names both
    values (never a secret) and what to remove."""
    for field in ("account_name", "account_url"):
        given, own = getattr(config, field), getattr(block, field)
        if given and own and given.rstrip("/") != own.rstrip("/"):
            raise BlockConflict(
                f"storage.{field} is {given!r} but the credentials block {name!r} holds {own!r}, whose credential "
                f"is for that one: remove {field} from the storage parameter (the block's is used), or name a block "
                f"for {given!r} in credentials_block"
            )


class AzureStorageParameter(AzureStorageConfig):
    """An Azure Blob Storage container. Credentials are never given here: they come from the Curation Azure
    Credentials block chosen in credentials_block, a Secret block named in secret_block, or the worker's
    CURATION_AZURE_* environment."""

    model_config = ConfigDict(title="Azure Blob Storage")

    # A block-typed field: Prefect's form offers the saved blocks; a name (prefect.yaml, CLI, SDK) works too.
    credentials_block: (
        Annotated[CurationAzureCredentials, Field(title="Saved block")] | Annotated[str, Field(title="Block name")] | None
    ) = Field(
        default=None,
        description="The Curation Azure Credentials block with the storage account and its credential; its account "
        "and endpoint are used (leave account_name and account_url empty)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_config(cls, value: Any) -> Any:
        """Accept a library AzureStorageConfig (the SDK's), its credential included."""
        if isinstance(value, AzureStorageConfig) and not isinstance(value, cls):
            return {name: getattr(value, name) for name in AzureStorageConfig.model_fields}
        return value

    def config(self) -> AzureStorageConfig:
        """The library's config: the block named, never embedded (a block chosen in the form gives its name)."""
        block = self.credentials_block
        name = block._block_document_name if isinstance(block, CurationAzureCredentials) else block
        fields = {field: getattr(self, field) for field in AzureStorageConfig.model_fields}
        return AzureStorageConfig(**{**fields, "credentials_block": name})


# The storage parameter of the flows, as the Prefect form shows it: a plain union (each choice's `kind` is a
# Literal, so validation still picks one), because Prefect's form draws a discriminated union as a JSON editor.
StorageParameter = Annotated[
    LocalStorageConfig | AzureStorageParameter,
    Field(
        description="Where the images are: an Azure container or a folder on the worker. Credentials are not asked "
        "for here: they come from the credentials block or the worker's environment",
    ),
]


def load_storage_credentials(config: StorageConfig) -> StorageConfig:
    """Fill an Azure config's credential from the block it names; a config with its own credential is kept.

    Args:
        config: the storage parameter of a flow; `credentials_block` names a CurationAzureCredentials block,
            `secret_block` a Secret block holding an account key (or, when the config names a client_id, the
            service principal's client secret).
    Returns:
        The config, with its credential when a block supplied one.
    """
    block = config.credentials_block if isinstance(config, AzureStorageParameter) else None
    if isinstance(config, AzureStorageParameter):
        config = config.config()
    if not isinstance(config, AzureStorageConfig) or config.secrets():
        return config
    if isinstance(block, CurationAzureCredentials):  # chosen in the Prefect form: already loaded
        return block.apply_to(config)
    if config.credentials_block:
        return CurationAzureCredentials.load(config.credentials_block).apply_to(config)
    if config.secret_block:
        from prefect.blocks.system import Secret

        secret = SecretStr(str(Secret.load(config.secret_block).get()))
        return config.model_copy(update={"client_secret" if config.client_id else "account_key": secret})
    return config


def settings_from_blocks(settings: Settings) -> Settings:
    """The settings with the inference API key read from the Secret block `api_key_block` names, when unset."""
    if settings.api_key is None and settings.api_key_block:
        from prefect.blocks.system import Secret

        return settings.model_copy(update={"api_key": SecretStr(str(Secret.load(settings.api_key_block).get()))})
    return settings


def secrets_from_blocks(fn: F) -> F:
    """Run a flow function under settings whose API key comes from its Secret block (CURATION_API_KEY_BLOCK)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with use_settings(settings_from_blocks(get_settings())):
            return fn(*args, **kwargs)

    # Evaluated annotations: Prefect builds the parameter model in the wrapper's module, which lacks the flow's names.
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run  # type: ignore[return-value]


def save_from_environment(name: str) -> CurationAzureCredentials:
    """Save a CurationAzureCredentials block from AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_ACCOUNT_URL (optional) and one
    of AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING (the Azure CLI's names), so no
    secret is typed on a command line. Overwrites a block of that name."""
    env = {k: os.environ.get(f"AZURE_STORAGE_{k.upper()}") or None for k in ("account", "account_url", "key",
                                                                            "sas_token", "connection_string")}
    block = CurationAzureCredentials(
        account_name=env["account"], account_url=env["account_url"], account_key=env["key"],
        sas_token=env["sas_token"], connection_string=env["connection_string"],
    )
    block.save(name, overwrite=True)
    return block


if __name__ == "__main__":  # python -m curation.tasks.blocks curation-azure
    saved = save_from_environment(sys.argv[1] if len(sys.argv) > 1 else "curation-azure")
    print(f"saved block {saved._block_document_name!r} (account {saved.account_name or saved.account_url})")
