"""Running the service: as a real HTTP server (`curation serve`) or embedded on a loopback port."""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn
from pydantic import SecretStr
from starlette.types import ASGIApp

from curation.inference.models.backends import load_backend
from curation.inference.service.app import create_app
from curation.settings import Settings


@dataclass
class RunningService:
    url: str
    api_key: SecretStr
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_in_thread(app: ASGIApp, api_key: SecretStr, host: str = "127.0.0.1", port: int = 0) -> RunningService:
    """Serve an ASGI app over real HTTP from a daemon thread, on a free port unless one is given."""
    # log_config=None: an embedded server must not reconfigure the host process's logging (it can deadlock
    # against Prefect's log handlers in other threads).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="inference-service")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the inference service did not start")
        time.sleep(0.02)
    return RunningService(f"http://{host}:{sock.getsockname()[1]}", api_key, server, thread)


def start_in_thread(settings: Settings, api_key: SecretStr, host: str = "127.0.0.1", port: int = 0) -> RunningService:
    """Serve the real service app, with the configured backend, from a daemon thread."""
    app = create_app(settings, load_backend(settings.model, settings), api_keys=[api_key.get_secret_value()])
    return serve_in_thread(app, api_key, host, port)


def start_embedded(settings: Settings) -> RunningService:
    """Start an embedded service on a loopback port. It alone may read file:// and loopback URLs (a local folder's
    images); its usage ledger is the data root's, which the viewer reads. Stop it with `.stop()`."""
    key = settings.api_key or SecretStr(secrets.token_urlsafe(24))
    embedded = settings.model_copy(
        update={"allow_file_urls": True, "allow_private_hosts": True, "usage_path": settings.usage_file}
    )
    return start_in_thread(embedded, key)


def reach_embedded(settings: Settings, service: RunningService) -> Settings:
    """The settings of a run whose replica is the embedded service."""
    return settings.model_copy(update={"service_url": service.url, "api_key": service.api_key})


@contextmanager
def service_for(settings: Settings) -> Iterator[Settings]:
    """Settings that reach an inference service for the duration of a run: as they are when they name replicas
    (CURATION_SERVICE_URL), else with an embedded service started here and stopped on exit."""
    if settings.service_urls:
        yield settings
        return
    service = start_embedded(settings)
    try:
        yield reach_embedded(settings, service)
    finally:
        service.stop()
