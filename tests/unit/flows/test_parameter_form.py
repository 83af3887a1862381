"""The deployed flows' Prefect UI form, from the parameter schema `prefect deploy` sends: storage choices named for
people, every field described, a block picker for the credentials, and no description naming a field the form hides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema

from curation.tasks.blocks import AzureStorageParameter, CurationAzureCredentials, load_storage_credentials

ROOT = Path(__file__).parents[3]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
HIDDEN = ("account_key", "sas_token", "connection_string", "client_secret")  # credentials: never in the form


def form_schema(entrypoint: str) -> dict[str, Any]:
    """The parameter_openapi_schema of a deployment of this flow."""
    flow = load_flow_from_entrypoint(str(ROOT / entrypoint))
    return parameter_schema(flow.fn).model_dump_for_openapi()


def form_models(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The nested models the form renders field by field (a block is rendered as a picker of saved blocks)."""
    definitions = schema.get("definitions", {})
    return {name: d for name, d in definitions.items() if "block_type_slug" not in d and "properties" in d}


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_field_of_every_nested_model_is_described_and_no_hidden_field_is_named(deployment):
    schema = form_schema(deployment["entrypoint"])
    texts = [p.get("description", "") for p in schema["properties"].values()]
    for name, model in form_models(schema).items():
        assert not set(model["properties"]) & set(HIDDEN), name
        texts.append(model.get("description", ""))
        for field, prop in model["properties"].items():
            assert prop.get("description"), f"{deployment['name']}: {name}.{field} has no description"
            texts.append(prop["description"])
    for text in texts:
        assert not [h for h in HIDDEN if h in text.lower()], text


@pytest.mark.parametrize(
    "entrypoint", ["flows/curate_dataset.py:curate_dataset", "flows/curate_new_blobs.py:curate_new_blobs"]
)
def test_storage_choices_are_titled_for_people_and_credentials_are_a_block_picker(entrypoint):
    schema = form_schema(entrypoint)
    # A plain anyOf: Prefect's form draws it as a choice of two forms (a discriminated oneOf becomes a JSON editor).
    assert "oneOf" not in schema["properties"]["storage"] and "discriminator" not in schema["properties"]["storage"]
    choices = [ref["$ref"].rsplit("/", 1)[1] for ref in schema["properties"]["storage"]["anyOf"]]
    assert sorted(schema["definitions"][c]["title"] for c in choices) == ["Azure Blob Storage", "Local folder"]
    credentials = schema["definitions"]["AzureStorageParameter"]["properties"]["credentials_block"]
    [block] = [v for v in credentials["anyOf"] if "$ref" in v]
    assert block["title"] == "Saved block"
    picked = schema["definitions"][block["$ref"].rsplit("/", 1)[1]]
    assert picked["block_type_slug"] == "curation-azure-credentials"  # Prefect's UI: a picker of saved blocks
    assert {"type": "string", "title": "Block name"} in credentials["anyOf"]  # prefect.yaml and the CLI name it


def test_a_block_chosen_in_the_form_or_named_gives_the_same_config_with_only_its_name():
    """The UI sends {"$ref": {"block_document_id": ...}}: Prefect loads the block before validation. A name stays a
    name. Either way the run's config names the block and holds the credential, which never serialises."""
    flow = load_flow_from_entrypoint(str(ROOT / "flows/curate_dataset.py:curate_dataset"))
    block = CurationAzureCredentials(account_name="acct", account_key="a2V5")
    block._block_document_name = "curation-azure"  # as Block.load_from_ref leaves it
    given = {"kind": "azure", "container_name": "drives", "credentials_block": block}
    storage = flow.validate_parameters({"name": "n", "storage": given})["storage"]
    assert isinstance(storage, AzureStorageParameter)
    config = load_storage_credentials(storage)
    assert type(config).__name__ == "AzureStorageConfig" and config.credentials_block == "curation-azure"
    assert config.account_name == "acct" and config.account_key.get_secret_value() == "a2V5"
    assert "a2V5" not in config.model_dump_json()
    named = flow.validate_parameters({"name": "n", "storage": {**given, "credentials_block": "curation-azure"}})
    assert named["storage"].credentials_block == "curation-azure"


def test_the_server_accepts_a_picked_block_and_a_block_name():
    """Prefect's server validates a run's parameters against the deployed schema (enforce_parameter_schema): the
    form's block reference and a name must both pass, a stray object must not."""
    from prefect.utilities.schema_tools.validation import ValidationError, validate

    schema = form_schema("flows/curate_dataset.py:curate_dataset")
    picked = {"$ref": {"block_document_id": "6b07853e-a0d8-1f32-3425-80f4aaaaaaaa"}}
    for credentials in (picked, "curation-azure", None):
        storage = {"kind": "azure", "container_name": "drives", "credentials_block": credentials}
        validate({"name": "n", "storage": storage}, schema, raise_on_error=True, preprocess=True)
    with pytest.raises(ValidationError):
        storage = {"kind": "azure", "credentials_block": "curation-azure"}  # no container: refused when run
        validate({"name": "n", "storage": storage}, schema, raise_on_error=True, preprocess=True)
