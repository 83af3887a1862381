"""prefect.yaml declares deployments whose entrypoints load and whose parameters fit the flows."""

from __future__ import annotations

from pathlib import Path

import yaml
from prefect.flows import load_flow_from_entrypoint

ROOT = Path(__file__).parents[2]


def test_deployments_match_their_flows():
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = set()
    for deployment in spec["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        assert flow.name == deployment["name"]  # kebab-case flow names match their deployment
        flow.validate_parameters(deployment["parameters"])
        assert deployment["work_pool"]["name"] == "curation-process"
        assert flow.description, "Prefect's UI shows the flow docstring"
        names.add(flow.name)
    assert names == {"curate-dataset", "track-curation", "sample-dataset"}


def test_flow_parameters_hold_no_secret_fields():
    """The UI form of curate-dataset has no credential field: secrets come from the environment or a block."""
    flow = load_flow_from_entrypoint(str(ROOT / "flows/curate_dataset.py:curate_dataset"))
    definitions = flow.parameters.model_dump()["definitions"]
    fields = set(definitions["AzureStorageConfig"]["properties"])
    assert {"container_name", "account_name", "account_url", "prefix", "secret_block"} <= fields
    assert not fields & {"account_key", "sas_token", "connection_string"}
