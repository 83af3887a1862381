"""Real parts for integration tests: Azurite, the inference service over HTTP, and Prefect."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from curation.inference.service.server import RunningService, start_in_thread
from curation.settings import Settings
from tests.azurite import AzuriteEndpoint, run_azurite

SERVICE_KEY = "integration-service-key-7f3a9c"


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEndpoint]:
    """One Azurite blob emulator for the whole test session (fresh data dir)."""
    with run_azurite(tmp_path_factory.mktemp("azurite")) as endpoint:
        yield endpoint


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """A real, temporary Prefect server and database for the session."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def service() -> Iterator[RunningService]:
    """The real FastAPI service over HTTP. Azurite is on loopback, so private hosts are allowed explicitly."""
    running = start_in_thread(Settings(allow_private_hosts=True, service_workers=2), SecretStr(SERVICE_KEY))
    yield running
    running.stop()


@pytest.fixture()
def settings(tmp_path: Path, service: RunningService) -> Settings:
    """Settings for one test: its own data root, the real service, fast polling."""
    return Settings(
        data_root=tmp_path / "data",
        service_url=service.url,
        api_key=SecretStr(SERVICE_KEY),
        poll_interval_s=0.2,
        transient_budget_s=20,
        shard_size=16,
    )


class LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture()
def captured_logs() -> Iterator[LogCollector]:
    """Every log line from our code, Prefect and the libraries, at DEBUG, for leak checks."""
    collector = LogCollector()
    loggers = [logging.getLogger(), logging.getLogger("prefect"), logging.getLogger("azure"), logging.getLogger("httpx")]
    previous = [(lg, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(collector)
        lg.setLevel(logging.DEBUG)
    yield collector
    for lg, level in previous:
        lg.removeHandler(collector)
        lg.setLevel(level)
