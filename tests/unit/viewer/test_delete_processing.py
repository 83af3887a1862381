"""A Processing dataset cannot be deleted (issue #18): the library refuses, the SDK raises, the CLI says so in one
line and never asks first. The dashboard's disabled Delete button is in tests/browser/test_viewer_polish.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from curation import cli
from curation.dataset.catalog import Catalog, DatasetProcessing
from curation.dataset.registry import Status
from curation.sdk import Curation
from curation.settings import _from_environment


@pytest.fixture(autouse=True)
def _data_root(tmp_path, monkeypatch):
    """CURATION_DATA_ROOT is tmp_path, read afresh (the settings read from the environment are cached)."""
    monkeypatch.setenv("CURATION_DATA_ROOT", str(tmp_path))
    _from_environment.cache_clear()
    yield
    _from_environment.cache_clear()


def test_the_library_and_the_sdk_refuse_a_processing_dataset(tmp_path) -> None:
    catalog = Catalog(tmp_path)
    running = catalog.register("still running")
    store = catalog.dataset(running.id)
    with pytest.raises(DatasetProcessing, match=r"is Processing: wait for it to end.*curation stale --mark-failed"):
        store.delete()
    assert store.exists() and store.load_record().status == Status.PROCESSING
    with pytest.raises(ValueError, match="is Processing"):  # DatasetProcessing is a ValueError
        Curation().delete_dataset(running.id)
    assert store.exists()
    store.mark_failed("stale")  # what `curation stale --mark-failed` does: then it can go
    Curation().delete_dataset(running.id)
    assert not store.exists()


def test_the_cli_refuses_in_one_line_without_asking(tmp_path) -> None:
    catalog = Catalog(tmp_path)
    running = catalog.register("still running")
    result = CliRunner().invoke(cli.app, ["delete", running.id])  # no --yes: the refusal comes before the question
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: dataset ") and "Delete dataset" not in result.output
    assert "is Processing: wait for it to end, or mark it Failed with `curation stale --mark-failed`" in lines[0]
    assert catalog.dataset(running.id).exists()
    catalog.dataset(running.id).update_record(status=Status.COMPLETED)
    done = CliRunner().invoke(cli.app, ["delete", running.id, "--yes"])
    assert done.exit_code == 0 and f"deleted {running.id}" in done.output
    assert not catalog.dataset(running.id).exists()
