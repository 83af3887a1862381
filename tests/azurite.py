"""Run the Azurite blob emulator (npm package ``azurite``) for tests.

Azurite is pinned in ``package.json`` / ``package-lock.json`` at the repository
root and installed into ``node_modules`` by ``npm ci`` (``make test`` does this).

``run_azurite(workdir, oauth=True)`` serves HTTPS with a self-signed certificate
for 127.0.0.1 and accepts bearer tokens (``--oauth basic``: Azurite checks a
token's issuer, audience and lifetime, not its signature), so Azure AD sign-in
and user delegation keys can be tested; ``azure_ad_token`` makes such a token.
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
# AZURITE_BLOB_BIN overrides the pinned binary, e.g. to try a newer Azurite without changing the pin.
AZURITE_BLOB_BIN = Path(os.environ.get("AZURITE_BLOB_BIN") or REPO_ROOT / "node_modules" / ".bin" / "azurite-blob")


def azurite_version() -> tuple[int, ...]:
    """The version of the Azurite that run_azurite starts (from its package.json), e.g. (3, 35, 0)."""
    import json

    package = AZURITE_BLOB_BIN.parent.parent / "azurite" / "package.json"
    return tuple(int(part) for part in json.loads(package.read_text())["version"].split(".")[:3])

HOST = "127.0.0.1"
DEV_ACCOUNT_NAME = "devstoreaccount1"
# Well-known, publicly documented Azurite/Storage Emulator development key.
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

STARTUP_TIMEOUT_S = 180.0  # a deadline only: Azurite answers as soon as it listens
SHUTDOWN_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3


class AzuriteError(RuntimeError):
    """Azurite is not installed or failed to start."""


@dataclass(frozen=True)
class AzuriteEndpoint:
    account_name: str
    account_key: str
    blob_endpoint: str  # e.g. http://127.0.0.1:PORT/devstoreaccount1 (https:// with oauth)
    connection_string: str
    host: str
    port: int
    cert: Path | None = None  # with oauth: the self-signed certificate to trust (PEM)


def _self_signed_cert(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1, valid for a day."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "azurite-cert.pem", workdir / "azurite-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def azure_ad_token(object_id: str = "5f0c6a8e-1c1f-4c55-9e6b-0b7f5d3f0a11",
                   tenant_id: str = "72f988bf-86f1-41af-91ab-2d7cd011db47", lifetime_s: int = 3600) -> tuple[str, int]:
    """An unsigned Azure AD access token for storage that Azurite's ``--oauth basic`` accepts, and its expiry."""
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "aud": "https://storage.azure.com", "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": now - 300, "nbf": now - 300, "exp": now + lifetime_s, "oid": object_id, "tid": tenant_id,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.", now + lifetime_s


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


def _start(workdir: Path, port: int, extra: list[str] | None = None) -> subprocess.Popen | str:
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
        *(extra or []),
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
def run_azurite(workdir: Path, oauth: bool = False) -> Iterator[AzuriteEndpoint]:
    """Start azurite-blob on a free 127.0.0.1 port with data in ``workdir``.

    Yields an :class:`AzuriteEndpoint`; the process is terminated on exit
    (killed if it has not exited within 5 s). With ``oauth``, it serves HTTPS
    (``endpoint.cert`` is the certificate to trust) and accepts bearer tokens.
    """
    if not AZURITE_BLOB_BIN.exists():
        raise AzuriteError(
            f"{AZURITE_BLOB_BIN} not found. Azurite is installed from the npm lockfile: "
            "run `make test` (which runs `npm ci` in the repository root)."
        )
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    cert = None
    extra: list[str] = []
    if oauth:
        cert, key = _self_signed_cert(workdir)
        extra = ["--cert", str(cert), "--key", str(key), "--oauth", "basic"]
    errors: list[str] = []
    started = None
    for _ in range(_PORT_ATTEMPTS):  # retry only if the free port was grabbed meanwhile
        port = _free_port()
        result = _start(workdir, port, extra)
        if not isinstance(result, str):
            started = port, result
            break
        errors.append(result)
        if "EADDRINUSE" not in result:
            break
    if started is None:
        raise AzuriteError("\n\n".join(errors))

    port, proc = started
    scheme = "https" if oauth else "http"
    blob_endpoint = f"{scheme}://{HOST}:{port}/{DEV_ACCOUNT_NAME}"
    endpoint = AzuriteEndpoint(
        account_name=DEV_ACCOUNT_NAME,
        account_key=DEV_ACCOUNT_KEY,
        blob_endpoint=blob_endpoint,
        connection_string=(
            f"DefaultEndpointsProtocol={scheme};"
            f"AccountName={DEV_ACCOUNT_NAME};"
            f"AccountKey={DEV_ACCOUNT_KEY};"
            f"BlobEndpoint={blob_endpoint};"
        ),
        host=HOST,
        port=port,
        cert=cert,
    )
    try:
        yield endpoint
    finally:
        _stop(proc)
