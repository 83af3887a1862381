"""docs/prefect.md's quick start, run as written: the fenced block after `<!-- quickstart` is executed line by line
in one shell on a fresh PREFECT_HOME, with Azurite as the storage. Only the port, the worker's log path and the
variables the doc asks the reader to set differ. The doc cannot drift from what works."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.integration.helpers import new_container, upload_images
from tests.integration.test_deployments import BIN, FINAL, ROOT, free_port, prefect_harness  # noqa: F401
from tests.waiting import wait_for

DOC = ROOT / "docs" / "prefect.md"


def _polled(method: str, url: str, **kwargs) -> object:
    """One poll of Prefect's API: None when the loaded server drops the connection, so `wait_for` polls again."""
    try:
        return httpx.request(method, url, **kwargs).json()
    except httpx.TransportError:
        return None


def _end_group(pgid: int) -> None:
    """SIGTERM to the process group, then SIGKILL if anything in it is still there 15 s later (a Prefect worker
    that took the SIGTERM for a graceful stop outlived a whole test session once)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def quickstart_lines() -> list[str]:
    """The commands of the quick start, one per line, as the doc shows them."""
    after = DOC.read_text().split("<!-- quickstart", 1)[1]
    block = after.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_the_quickstart_runs_as_documented(tmp_path: Path, azurite):
    lines = quickstart_lines()
    assert lines[0].startswith("export PREFECT_API_URL=") and any("deployment run" in line for line in lines)
    port, worker_log = free_port(), tmp_path / "worker.log"
    script = "\n".join(line.replace("4200", str(port)).replace("worker.log", str(worker_log)) for line in lines)
    container = new_container(azurite)
    upload_images(container, 32)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CURATION_", "AZURE_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PWD=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # What the doc asks the reader to set, for Azurite:
        AZURE_STORAGE_ACCOUNT=azurite.account_name, AZURE_STORAGE_ACCOUNT_URL=azurite.blob_endpoint,
        AZURE_STORAGE_KEY=azurite.account_key, IMAGES_CONTAINER=container.container_name,
        CURATION_DATA_ROOT=str(tmp_path / "data"),
    )
    api = f"http://127.0.0.1:{port}/api"
    out = tmp_path / "quickstart.log"
    shell = subprocess.Popen(
        ["bash", "-c", "set -euxo pipefail\n" + script], env=env, cwd=ROOT, stdout=out.open("w"),
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        returncode = shell.wait(timeout=1500)  # the run itself is watched by `prefect deployment run --watch`
        log = lambda: out.read_text()[-4000:] + (worker_log.read_text()[-3000:] if worker_log.exists() else "")  # noqa: E731
        assert returncode == 0, log()

        deployment = httpx.get(f"{api}/deployments/name/curate-dataset/curate-dataset").json()
        runs = httpx.post(f"{api}/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment["id"]]}}}).json()
        [run] = runs
        assert run["state"]["type"] == "COMPLETED"
        [record] = (tmp_path / "data" / "datasets").iterdir()
        dataset_id = record.name

        # The artifacts are on the run that was triggered, not on its track-curation subflow.
        on_run = {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}}
        artifacts = httpx.post(f"{api}/artifacts/filter", json=on_run).json()
        listed = sorted((a["key"], a["type"]) for a in artifacts)
        print("\nartifacts of the triggered curate-dataset run", run["id"], listed)
        assert listed == [(f"curation-{dataset_id}", "markdown"), (f"curation-{dataset_id}-classes", "table")]
        report = next(a["data"] for a in artifacts if a["type"] == "markdown")
        assert "32 found, 32 accepted, 32 processed, 0 failed." in report, report
        everything = httpx.post(f"{api}/artifacts/filter", json={}).json()
        assert {a["flow_run_id"] for a in everything if a["key"].startswith("curation-")} == {run["id"]}
        listing = out.read_text().split("+ prefect artifact ls", 1)[1]
        assert f"curation-{dataset_id[:12]}" in listing  # `prefect artifact ls` showed them (its table truncates)

        # The completion event names the triggered run and its deployment.
        body = {"filter": {"event": {"name": ["curation.dataset.completed"]}}, "limit": 5}
        [event] = wait_for(lambda: (_polled("POST", f"{api}/events/filter", json=body) or {}).get("events"), "completed event")
        related = {(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]}
        assert (f"prefect.flow-run.{run['id']}", "flow-run") in related, related
        assert (f"prefect.deployment.{deployment['id']}", "deployment") in related, related

        # The automation chained summarise-dataset onto the completion event.
        summarise = httpx.get(f"{api}/deployments/name/summarise-dataset/summarise-dataset").json()
        only = {"deployments": {"id": {"any_": [summarise["id"]]}}}
        runs_of = lambda: _polled("POST", f"{api}/flow_runs/filter", json=only) or []  # noqa: E731
        done = lambda: [r for r in runs_of() if r["state"]["type"] in FINAL]  # noqa: E731
        [downstream] = wait_for(done, "the summarise-dataset run started by the automation", deadline_s=300, detail=log)
        assert downstream["state"]["type"] == "COMPLETED" and downstream["parameters"] == {"dataset_id": dataset_id}
        key = {"artifacts": {"key": {"any_": [f"summary-{dataset_id}"]}}}
        summary = httpx.post(f"{api}/artifacts/filter", json=key).json()
        assert [a["flow_run_id"] for a in summary] == [downstream["id"]]
    finally:
        # the backgrounded worker lives in the shell's process group, after the shell has exited
        _end_group(shell.pid)
        subprocess.run([str(BIN / "prefect"), "server", "stop"], env=env, cwd=ROOT, capture_output=True, timeout=60)
