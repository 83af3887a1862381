"""The credentials block: exactly one credential, applied to a storage config without ever serialising it."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from curation.settings import Settings
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig
from curation.tasks.blocks import CurationAzureCredentials, load_storage_credentials, settings_from_blocks

KEY = "c2VjcmV0LWFjY291bnQta2V5LWZvci10ZXN0cw=="


@pytest.mark.parametrize(
    "fields",
    [
        {"account_name": "acct"},  # none
        {"account_name": "acct", "account_key": KEY, "sas_token": "sv=1&sig=x"},  # two
        {"account_key": KEY},  # a key without an account
    ],
)
def test_block_refuses_anything_but_one_usable_credential(fields):
    with pytest.raises(ValidationError):
        CurationAzureCredentials(**fields)


def test_block_fills_the_credential_and_missing_account_fields_but_never_serialises_them():
    block = CurationAzureCredentials(account_name="acct", account_url="http://127.0.0.1:1/acct", account_key=KEY)
    config = AzureStorageConfig(container_name="drives", prefix="2024/", credentials_block="b")
    filled = block.apply_to(config)
    assert filled.account_key.get_secret_value() == KEY and filled.sas_token is None
    assert (filled.account_name, filled.account_url, filled.prefix) == ("acct", "http://127.0.0.1:1/acct", "2024/")
    assert KEY not in filled.model_dump_json() and KEY not in repr(filled) and KEY not in repr(block)
    same = block.apply_to(config.model_copy(update={"account_name": "acct", "account_url": "http://127.0.0.1:1/acct/"}))
    assert same.account_name == "acct"  # the block's own values, repeated, are no conflict


@pytest.mark.parametrize(
    ("field", "value"), [("account_name", "mystorageaccount"), ("account_url", "https://other.blob.core.windows.net")]
)
def test_a_config_naming_another_account_than_its_block_is_refused_with_what_to_remove(field, value):
    """prefect.yaml once pre-filled account_name: a run signed for the block's account and read another, and Azure
    answered 'Server failed to authenticate' three times. Now the run fails at once and says what to do."""
    from curation.tasks.blocks import BlockConflict

    block = CurationAzureCredentials(account_name="acct", account_url="http://127.0.0.1:1/acct", account_key=KEY)
    config = AzureStorageConfig(container_name="drives", credentials_block="curation-azure", **{field: value})
    with pytest.raises(BlockConflict) as error:
        block.apply_to(config)
    message = str(error.value)
    assert f"storage.{field} is {value!r}" in message and "'curation-azure'" in message
    assert f"remove {field} from the storage parameter" in message and KEY not in message


def test_configs_with_their_own_credential_or_no_block_are_left_alone():
    own = AzureStorageConfig(
        container_name="c", account_name="a", account_key=SecretStr(KEY), credentials_block="unused"
    )
    assert load_storage_credentials(own) is own  # no block lookup: no Prefect API needed
    bare = AzureStorageConfig(container_name="c", account_name="a")
    assert load_storage_credentials(bare) is bare
    local = LocalStorageConfig(path="/tmp")
    assert load_storage_credentials(local) is local
    settings = Settings(api_key=SecretStr("k"), api_key_block="unused")
    assert settings_from_blocks(settings) is settings
