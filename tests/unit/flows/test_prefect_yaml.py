"""prefect.yaml declares deployments whose entrypoints load and whose parameters fit the flows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from prefect.exceptions import ParameterTypeError
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).parents[3]


def test_deployments_match_their_flows():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name == deployment["name"]  # kebab-case flow names match their deployment
        if deployment.get("schedules"):  # shipped without a container: a user fills it in first
            storage = deployment["parameters"]["storage"]
            assert "container_name" not in storage and not {"account_name", "account_url"} & set(storage)
            assert all(s["active"] is False for s in deployment["schedules"])
            with pytest.raises(ParameterTypeError, match="container_name"):
                flow.validate_parameters(deployment["parameters"])
            filled = {**deployment["parameters"], "storage": {**storage, "container_name": "driving-images"}}
            flow.validate_parameters(filled)
        else:
            flow.validate_parameters(deployment["parameters"])
        assert deployment["work_pool"]["name"] == "curation-process"
        assert flow.description, "Prefect's UI shows the flow docstring"
        names.add(flow.name)
    assert names >= {"curate-dataset", "track-curation", "sample-dataset", "curate-new-blobs", "summarise-dataset",
                     "teach-dataset"}


def test_summarise_dataset_is_triggered_by_a_completed_curation_with_its_dataset_id():
    """The trigger matches our event and resource id pattern and renders the dataset id from the event."""
    from prefect.events import Event, Resource
    from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
    from prefect.server.utilities.user_templates import render_user_template

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [deployment] = [d for d in spec["deployments"] if d["name"] == "summarise-dataset"]
    [raw] = deployment["triggers"]
    trigger = DeploymentEventTrigger.model_validate(raw)
    assert trigger.expect == {"curation.dataset.completed"} and trigger.enabled
    dataset_id = "6b07853ea0d81f32342580f4"
    event = Event(
        event="curation.dataset.completed",
        resource=Resource({"prefect.resource.id": f"curation.dataset.{dataset_id}", "prefect.resource.name": "x"}),
        payload={"dataset_id": dataset_id, "status": "Completed"},
    )
    assert trigger.match.matches(event.resource)
    assert not trigger.match.matches(Resource({"prefect.resource.id": f"prefect.flow-run.{dataset_id}"}))
    rendered = asyncio.run(render_user_template(trigger.parameters["dataset_id"], {"event": event}))
    assert rendered == dataset_id


def test_flow_parameters_hold_no_secret_fields():
    """The UI form of curate-dataset has no credential field: secrets come from the environment or a block."""
    flow = load_flow_from_entrypoint(str(ROOT / "flows/curate_dataset.py:curate_dataset"))
    definitions = flow.parameters.model_dump()["definitions"]
    fields = set(definitions["AzureStorageParameter"]["properties"])
    assert {"container_name", "account_name", "account_url", "prefix", "secret_block", "credentials_block"} <= fields
    assert not fields & {"account_key", "sas_token", "connection_string"}


def test_every_deployed_parameter_is_described_in_the_ui_form():
    """Prefect's form takes parameter descriptions from the flow docstring's Args section; none may be missing."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        properties = flow.parameters.properties
        assert properties, flow.name
        for name, schema in properties.items():
            assert schema.get("description"), f"{flow.name}: parameter {name!r} has no description in the UI form"
