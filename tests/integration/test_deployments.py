"""prefect.yaml for real: a local Prefect server, a process work pool and worker, `prefect deploy --all`, and a run
triggered through the API the way the UI does, ending Completed with the dataset in the registry."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from curation import registry
from tests.images import write_images

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


def test_deploy_all_and_run_curate_dataset_through_a_process_worker(tmp_path, prefect_server):
    env = dict(prefect_server)
    run = lambda *args: subprocess.run([str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # noqa: E731
    created = run("work-pool", "create", "curation-process", "--type", "process")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = run("--no-prompt", "deploy", "--all")
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    for name in ("curate-dataset/curate-dataset", "track-curation/track-curation", "sample-dataset/sample-dataset"):
        assert name in deployed.stdout

    images, data_root = tmp_path / "images", tmp_path / "data"
    write_images(images, 31)
    worker_env = dict(env, CURATION_DATA_ROOT=str(data_root), CURATION_POLL_INTERVAL_S="0.5")
    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", "curation-process"], worker_env, tmp_path / "worker.log")
    try:
        api = env["PREFECT_API_URL"]
        deployment = httpx.get(f"{api}/deployments/name/curate-dataset/curate-dataset").json()
        parameters = {"name": "from the UI", "storage": {"kind": "local", "path": str(images)}}
        flow_run = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", json={"parameters": parameters}).json()
        state = None
        for _ in range(360):
            state = httpx.get(f"{api}/flow_runs/{flow_run['id']}").json()["state"]
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
        assert state and state["type"] == "COMPLETED", f"{state}\n{log[-3000:]}"
    finally:
        stop(worker)
    [record] = registry.list_records(data_root)
    assert record.name == "from the UI" and record.status.value == "Completed" and record.counts.processed == 31
