"""prefect.yaml for real: a local Prefect server, a process work pool and worker, `prefect deploy --all`, credentials
in blocks, a run of the demo dataset from Azurite triggered through the API the way the UI does, ending Completed with
the dataset in the registry, and the downstream deployment started by its curation.dataset.completed event."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from curation.dataset.catalog import Catalog
from curation.demo import generate_demo_images
from tests.integration.conftest import SERVICE_KEY
from tests.integration.helpers import new_container

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """Overrides the suite's temporary Prefect server: this module starts a real one of its own."""
    yield


@pytest.fixture()
def prefect_server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CURATION_"))}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PWD=str(ROOT),
    )
    server = start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path / "server.log")
    try:
        for _ in range(240):
            try:
                if httpx.get(f"{env['PREFECT_API_URL']}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None:
                pytest.fail(f"prefect server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("prefect server did not start in 120 s")
        yield env
    finally:
        stop(server)


SAVE_BLOCKS = """
import os
from prefect.blocks.system import Secret
from curation.tasks.blocks import CurationAzureCredentials
CurationAzureCredentials(
    account_name=os.environ["AZ_NAME"], account_url=os.environ["AZ_URL"], account_key=os.environ["AZ_KEY"]
).save("curation-azure")
Secret(value=os.environ["API_KEY"]).save("inference-api-key")
"""
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def wait_for_state(api: str, flow_run_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = httpx.get(f"{api}/flow_runs/{flow_run_id}").json()
        if run["state"]["type"] in FINAL or time.monotonic() > deadline:
            return run
        time.sleep(0.25)


def test_deploy_all_and_run_the_demo_dataset_with_credentials_from_blocks(tmp_path, prefect_server, azurite, service):
    env = dict(prefect_server)
    api = env["PREFECT_API_URL"]
    demo = ThreadPoolExecutor(1).submit(generate_demo_images, tmp_path / "demo", count=72)  # while Prefect deploys
    run = lambda *args: subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # noqa: E731
    created = run("work-pool", "create", "curation-process", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    for name in ("curate-dataset", "track-curation", "sample-dataset", "summarise-dataset"):
        assert f"{name}/{name}" in deployed.stdout

    # Credentials live in blocks on the server, created as docs/prefect.md says: register, then save from Python.
    registered = run("block", "register", "-m", "curation.tasks.blocks")
    assert registered.returncode == 0 and "Curation Azure Credentials" in registered.stdout, registered.stdout
    secrets = {"AZ_KEY": azurite.account_key, "API_KEY": SERVICE_KEY}
    block_env = dict(env, AZ_NAME=azurite.account_name, AZ_URL=azurite.blob_endpoint, **secrets)
    saved = subprocess.run(
        [sys.executable, "-c", SAVE_BLOCKS], env=block_env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert saved.returncode == 0, saved.stderr[-2000:]

    # The demo dataset (72 synthetic scenes) in an Azurite container.
    container = new_container(azurite)
    demo.result()
    for image in sorted((tmp_path / "demo").glob("demo_*")):
        container.upload_blob(f"demo/{image.name}", image.read_bytes())

    # The worker knows no credential: only the service URL and the name of the API key's Secret block.
    data_root = tmp_path / "data"
    worker_env = dict(
        env, CURATION_DATA_ROOT=str(data_root), CURATION_POLL_INTERVAL_S="0.5",
        CURATION_SERVICE_URL=service.url, CURATION_API_KEY_BLOCK="inference-api-key",
        PREFECT_WORKER_QUERY_SECONDS="2",  # Prefect's default polls every 10 s: up to 8 s more per run
    )
    assert not [k for k in worker_env if k.startswith("CURATION_AZURE_") or k == "CURATION_API_KEY"]
    assert not set(secrets.values()) & set(worker_env.values())
    worker_log = tmp_path / "worker.log"
    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "curation-process"], worker_env, worker_log)
    try:
        deployment = httpx.get(f"{api}/deployments/name/curate-dataset/curate-dataset").json()
        summarise = httpx.get(f"{api}/deployments/name/summarise-dataset/summarise-dataset").json()
        parameters = {
            "name": "Demo: synthetic road scenes", "dataset_type": "demo",
            "storage": {"kind": "azure", "container_name": container.container_name, "prefix": "demo/",
                        "credentials_block": "curation-azure"},
        }
        # A storage parameter naming another account than its block fails at once, saying what to remove (no
        # listing retried against an account the credential is not for).
        clash = {**parameters, "storage": {**parameters["storage"], "account_name": "mystorageaccount"}}
        refused = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": clash})
        refused = wait_for_state(api, refused.json()["id"], timeout=240)
        assert refused["state"]["type"] == "FAILED", refused["state"]
        message = refused["state"]["message"]
        assert "storage.account_name is 'mystorageaccount'" in message and "remove account_name" in message, message
        tasks = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [refused["id"]]}}}).json()
        assert not tasks, [t["name"] for t in tasks]

        # The UI's form picks the block: the run's parameters hold a reference to it, never its values.
        slug = "block_types/slug/curation-azure-credentials/block_documents/name/curation-azure"
        block_id = httpx.get(f"{api}/{slug}").json()["id"]
        picked = {**parameters["storage"], "credentials_block": {"$ref": {"block_document_id": block_id}}}
        triggered = time.monotonic()
        body = {"parameters": {**parameters, "storage": picked}}
        flow_run = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json=body)
        flow_run = wait_for_state(api, flow_run.json()["id"], timeout=240)
        trigger_to_completed = time.monotonic() - triggered
        assert flow_run["state"]["type"] == "COMPLETED", f"{flow_run['state']}\n{worker_log.read_text()[-3000:]}"

        # Its report and class table are on the run that was triggered, not on the track-curation subflow.
        on_run = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run["id"]]}}})
        assert sorted(a["type"] for a in on_run.json()) == ["markdown", "table"], on_run.json()

        # The downstream deployment: a run created by the server's automation from the event, with the dataset id.
        [record] = Catalog(data_root).records()
        downstream: list[dict] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(r["state"]["type"] in FINAL for r in downstream):
            body = {"deployments": {"id": {"any_": [summarise["id"]]}}}
            downstream = httpx.post(f"{api}/flow_runs/filter", json=body).json()
            time.sleep(0.5)
        event_to_completed = time.monotonic() - triggered - trigger_to_completed
        assert [r["state"]["type"] for r in downstream] == ["COMPLETED"], (downstream, worker_log.read_text()[-3000:])
        assert downstream[0]["parameters"] == {"dataset_id": record.id}
        only = {"artifacts": {"key": {"any_": [f"summary-{record.id}"]}}}
        artifacts = httpx.post(f"{api}/artifacts/filter", json=only).json()
        assert [a["flow_run_id"] for a in artifacts] == [downstream[0]["id"]]
        assert "72 images, 0 failed" in artifacts[0]["data"]
        automations = httpx.get(f"{api}/automations/related-to/prefect.deployment.{summarise['id']}").json()
        assert [a["trigger"]["expect"] for a in automations] == [["curation.dataset.completed"]]
    finally:
        stop(worker)

    assert record.name == "Demo: synthetic road scenes" and record.type.value == "demo"
    assert record.status.value == "Completed" and record.counts.processed == 72 and record.counts.failed == 0
    assert record.storage["account_name"] == azurite.account_name  # from the block
    assert record.storage["credentials_block"] == "curation-azure"  # the picked block, by name, for later runs

    # No secret in the deployment's or the runs' parameters, job variables, or the worker's and server's logs.
    runs = httpx.post(f"{api}/flow_runs/filter", json={}).json()
    deployments = httpx.post(f"{api}/deployments/filter", json={}).json()
    by_name = {d["name"]: d for d in deployments}
    assert set(by_name) >= {"curate-dataset", "track-curation", "sample-dataset", "curate-new-blobs", "summarise-dataset"}
    for d in deployments:  # the UI form explains every parameter
        for parameter, schema in d["parameter_openapi_schema"]["properties"].items():
            assert schema.get("description"), (d["name"], parameter)
    [hourly] = by_name["curate-new-blobs"]["schedules"]
    assert hourly["schedule"]["cron"] == "0 * * * *" and hourly["active"] is False  # scheduled, off by default
    for name in ("curate-dataset", "curate-new-blobs"):  # no placeholder that could run, or override the block
        storage = by_name[name]["parameters"]["storage"]
        assert storage == {"kind": "azure", "credentials_block": "curation-azure"}, storage
        form = by_name[name]["parameter_openapi_schema"]["definitions"]
        assert {form[d]["title"] for d in ("AzureStorageParameter", "LocalStorageConfig")} == {
            "Azure Blob Storage", "Local folder"
        }
        assert form["CurationAzureCredentials"]["block_type_slug"] == "curation-azure-credentials"  # a block picker
    fields = ("parameters", "job_variables", "parameter_openapi_schema")
    places = {
        "deployments": json.dumps([[d[k] for k in fields] for d in deployments]),
        "flow runs": json.dumps([[r["parameters"], r["job_variables"]] for r in runs]),
        "worker log": worker_log.read_text(),
        "server log": (tmp_path / "server.log").read_text(),
    }
    assert "curation-azure" in places["flow runs"] and len(runs) >= 3  # curate, its track-curation subflow, summarise
    for where, text in places.items():
        for name, secret in secrets.items():
            assert secret not in text, f"{name} in {where}"

    start_latency = (_when(flow_run["start_time"]) - _when(flow_run["expected_start_time"])).total_seconds()
    print(
        f"\ndemo dataset (72 images) through the deployment: trigger to Completed {trigger_to_completed:.1f} s "
        f"(scheduled to running {start_latency:.1f} s, flow run {flow_run['total_run_time']:.1f} s); "
        f"downstream summarise-dataset Completed {event_to_completed:.1f} s later"
    )


def _when(text: str):
    from datetime import datetime

    return datetime.fromisoformat(text)
