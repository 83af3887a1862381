"""Nothing outlives a killed CLI or SDK process (issue #17): Prefect's temporary server, the inference pool's fork
server and workers, and multiprocessing's resource tracker end when `curation curate` (or a script calling
`Curation.curate_dataset`) is killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.images import write_images

pytestmark = pytest.mark.integration

CURATION = Path(sys.executable).parent / "curation"
WORKERS = 2
DEADLINE_S = 180  # a deadline only: each wait returns as soon as its event happens


def wait_for(what: str, condition: Callable[[], bool], detail: Callable[[], str] = str) -> None:
    """Poll condition until it holds; fail naming what did not happen by the deadline, and detail()."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {DEADLINE_S} s\n{detail()}")
        time.sleep(0.1)


def alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed process's children are re-parented to a PID 1 that may never reap)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:160]}"
    except psutil.Error:
        return f"{process.pid} (gone)"


SDK_RUN = (
    "import sys\n"
    "from curation import Curation, LocalStorageConfig\n"
    "Curation().curate_dataset('orphans', LocalStorageConfig(path=sys.argv[1]), wait=True)\n"
)


@pytest.mark.parametrize("via", ["cli", "sdk"])
def test_a_killed_curate_leaves_no_process_behind(tmp_path, via):
    write_images(tmp_path / "images", 300)  # a run long enough to be killed mid-inference
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURATION_", "PREFECT_API_URL"))}
    env.update(CURATION_DATA_ROOT=str(tmp_path / "data"), CURATION_WORK_PROCESSES=str(WORKERS), COLUMNS="200")
    command = {
        "cli": [str(CURATION), "curate", "--name", "orphans", "--local", str(tmp_path / "images")],
        "sdk": [sys.executable, "-c", SDK_RUN, str(tmp_path / "images")],
    }[via]
    with open(tmp_path / "cli.log", "wb") as log:
        cli = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    parent = psutil.Process(cli.pid)
    seen: dict[int, psutil.Process] = {}

    def all_up() -> bool:
        """Prefect's temporary server and the pool's workers (children of the fork server) are running."""
        try:
            for child in parent.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            return True  # the run ended: checked below
        lines = {pid: describe(p) for pid, p in seen.items() if alive(p)}
        servers = [pid for pid, line in lines.items() if "uvicorn" in line and "prefect" in line]
        forkservers = [pid for pid, line in lines.items() if "multiprocessing.forkserver" in line]
        workers = [pid for pid, p in seen.items() if alive(p) and p.ppid() in forkservers]
        return bool(servers) and len(workers) >= WORKERS

    def survivors() -> str:
        return "survivors:\n" + "\n".join(describe(p) for p in seen.values() if alive(p))

    try:
        wait_for("the Prefect server and the inference workers starting", all_up, lambda: (tmp_path / "cli.log").read_text())
        assert cli.poll() is None, "the run ended before it could be killed:\n" + (tmp_path / "cli.log").read_text()
        all_up()  # the latest children too
        cli.send_signal(signal.SIGKILL)
        cli.wait()
        wait_for("every process of the killed run ending", lambda: not any(alive(p) for p in seen.values()), survivors)
    finally:
        for process in seen.values():  # never leave them to the next test, whatever happened
            if alive(process):
                process.kill()
        if cli.poll() is None:
            cli.kill()
            cli.wait()
