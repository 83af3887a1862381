"""Prefect's temporary server gets time to start on a loaded machine, unless the user chose a limit (issue #17)."""

from __future__ import annotations

from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as LIMIT
from prefect.settings import temporary_settings

from curation.settings import Settings
from curation.flows.runners import EPHEMERAL_STARTUP_TIMEOUT_S, prefect_api_for


def test_a_run_gives_the_temporary_server_the_longer_start_up_limit(monkeypatch):
    monkeypatch.delenv(LIMIT.name, raising=False)
    before = LIMIT.value()
    with prefect_api_for(Settings(task_runner="threads")):
        assert LIMIT.value() == EPHEMERAL_STARTUP_TIMEOUT_S == 120
    assert LIMIT.value() == before


def test_a_limit_the_user_set_in_the_environment_is_kept(monkeypatch):
    monkeypatch.setenv(LIMIT.name, "20")  # even Prefect's own default, when the user asked for it
    with prefect_api_for(Settings(task_runner="threads")):
        assert LIMIT.value() == 20


def test_a_limit_the_user_set_in_a_profile_is_kept(monkeypatch):
    monkeypatch.delenv(LIMIT.name, raising=False)
    with temporary_settings(updates={LIMIT: 45}), prefect_api_for(Settings(task_runner="threads")):
        assert LIMIT.value() == 45
