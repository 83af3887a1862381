"""Run the Azurite blob emulator (npm package ``azurite``) for tests.

Azurite is pinned in ``package.json`` / ``package-lock.json`` at the repository
root and installed into ``node_modules`` by ``npm ci`` (``make test`` does this).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB_BIN = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"

HOST = "127.0.0.1"
DEV_ACCOUNT_NAME = "devstoreaccount1"
# Well-known, publicly documented Azurite/Storage Emulator development key.
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3


class AzuriteError(RuntimeError):
    """Azurite is not installed or failed to start."""


@dataclass(frozen=True)
class AzuriteEndpoint:
    account_name: str
    account_key: str
    blob_endpoint: str  # e.g. http://127.0.0.1:PORT/devstoreaccount1
    connection_string: str
    host: str
    port: int


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _port_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    # Azurite runs in its own session/process group (start_new_session=True),
    # so this also reaches any child processes it may have spawned.
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _start(workdir: Path, port: int) -> subprocess.Popen | str:
    """Start Azurite on ``port``; return the process, or an error text if it died."""
    stdout_path = workdir / f"azurite-{port}.stdout.log"
    stderr_path = workdir / f"azurite-{port}.stderr.log"
    cmd = [
        str(AZURITE_BLOB_BIN),
        "--blobHost", HOST,
        "--blobPort", str(port),
        "--location", str(workdir),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
        "--disableTelemetry",
    ]
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return (
                    f"azurite-blob exited with code {proc.returncode} before listening on "
                    f"{HOST}:{port}.\nstderr:\n{_read(stderr_path)}\nstdout:\n{_read(stdout_path)}"
                )
            if _port_answers(port):
                return proc
            time.sleep(0.1)
    except BaseException:  # e.g. KeyboardInterrupt while waiting: don't leak the process
        _stop(proc)
        raise
    _stop(proc)
    raise AzuriteError(
        f"azurite-blob did not answer on {HOST}:{port} within {STARTUP_TIMEOUT_S:.0f}s.\n"
        f"stderr:\n{_read(stderr_path)}\nstdout:\n{_read(stdout_path)}"
    )


@contextmanager
def run_azurite(workdir: Path) -> Iterator[AzuriteEndpoint]:
    """Start azurite-blob on a free 127.0.0.1 port with data in ``workdir``.

    Yields an :class:`AzuriteEndpoint`; the process is terminated on exit
    (killed if it has not exited within 5 s).
    """
    if not AZURITE_BLOB_BIN.exists():
        raise AzuriteError(
            f"{AZURITE_BLOB_BIN} not found. Azurite is installed from the npm lockfile: "
            "run `make test` (which runs `npm ci` in the repository root)."
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    errors: list[str] = []
    started = None
    for _ in range(_PORT_ATTEMPTS):  # retry only if the free port was grabbed meanwhile
        port = _free_port()
        result = _start(workdir, port)
        if not isinstance(result, str):
            started = port, result
            break
        errors.append(result)
        if "EADDRINUSE" not in result:
            break
    if started is None:
        raise AzuriteError("\n\n".join(errors))

    port, proc = started
    blob_endpoint = f"http://{HOST}:{port}/{DEV_ACCOUNT_NAME}"
    endpoint = AzuriteEndpoint(
        account_name=DEV_ACCOUNT_NAME,
        account_key=DEV_ACCOUNT_KEY,
        blob_endpoint=blob_endpoint,
        connection_string=(
            "DefaultEndpointsProtocol=http;"
            f"AccountName={DEV_ACCOUNT_NAME};"
            f"AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint={blob_endpoint};"
        ),
        host=HOST,
        port=port,
    )
    try:
        yield endpoint
    finally:
        _stop(proc)
