"""Credentials from Prefect blocks: the Azure credential of a container and the inference service's API key.

prefect-azure's AzureBlobStorageCredentials holds a connection string or an account URL for
DefaultAzureCredential, but no account key or SAS token (an account key signs our per-blob read SAS), and it
installs prefect-docker and azure-mgmt-* with it; this block is the small one we need.

Register the block type once per Prefect server with `prefect block register -m tasks.blocks`
(`.save()` registers it too).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, model_validator

from curation.settings import Settings, get_settings, use_settings
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig

F = TypeVar("F", bound=Callable[..., Any])
StorageConfig = LocalStorageConfig | AzureStorageConfig


class CurationAzureCredentials(Block):
    """Azure Blob Storage credentials for curation: exactly one of account key, container SAS or connection string.

    Example:
        CurationAzureCredentials(account_name="myaccount", account_key="...").save("drives")
    """

    _block_type_name = "Curation Azure Credentials"
    _block_type_slug = "curation-azure-credentials"
    _description = "An Azure storage account key, container SAS (read+list) or connection string for curation."

    account_name: str | None = Field(default=None, description="Storage account (not needed with a connection string)")
    account_url: str | None = Field(default=None, description="Account endpoint, e.g. Azurite's or a sovereign cloud's")
    account_key: SecretStr | None = Field(default=None, description="Account key: lists, reads and signs per-blob SAS")
    sas_token: SecretStr | None = Field(default=None, description="A container SAS with read and list permissions")
    connection_string: SecretStr | None = Field(default=None, description="A connection string with an account key")

    @model_validator(mode="after")
    def _exactly_one_credential(self) -> CurationAzureCredentials:
        given = [s for s in (self.account_key, self.sas_token, self.connection_string) if s is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of account_key, sas_token or connection_string (got {len(given)})")
        if self.connection_string is None and not (self.account_name or self.account_url):
            raise ValueError("an account key or SAS token needs account_name or account_url")
        return self

    def apply_to(self, config: AzureStorageConfig) -> AzureStorageConfig:
        """The config with this block's credential, and its account name and URL where the config has none.

        Args:
            config: a storage config without a credential of its own.
        Returns:
            A copy holding the credential (never serialised: its fields are excluded).
        """
        return config.model_copy(
            update={
                "account_key": self.account_key,
                "sas_token": self.sas_token,
                "connection_string": self.connection_string,
                "account_name": config.account_name or self.account_name,
                "account_url": config.account_url or self.account_url,
            }
        )


def load_storage_credentials(config: StorageConfig) -> StorageConfig:
    """Fill an Azure config's credential from the block it names; a config with its own credential is kept.

    Args:
        config: the storage parameter of a flow; `credentials_block` names a CurationAzureCredentials block,
            `secret_block` a Secret block holding an account key.
    Returns:
        The config, with its credential when a block supplied one.
    """
    if not isinstance(config, AzureStorageConfig) or config.secrets():
        return config
    if config.credentials_block:
        return CurationAzureCredentials.load(config.credentials_block).apply_to(config)
    if config.secret_block:
        from prefect.blocks.system import Secret

        return config.model_copy(update={"account_key": SecretStr(str(Secret.load(config.secret_block).get()))})
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
