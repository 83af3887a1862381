"""The CLI as a user runs it: the demo on the embedded service, and clear errors for wrong input.

Commands run in this process through typer's CliRunner; a separate process only where the test needs one: the demo
end to end once, and what Prefect prints to the real console (its console handler holds the process's stderr).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner, Result

from curation import cli as cli_module
from curation.dataset.tags import class_label
from curation.dataset.catalog import Catalog, Table
from curation.settings import Settings, use_settings
from tests.images import write_images
from tests.integration.helpers import new_container, upload_images

CURATION = Path(sys.executable).parent / "curation"


def last_line(result: Result) -> str:
    """Our own closing message."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    return next(line for line in lines if line.startswith("error:"))


class Cli:
    """Runs `curation` commands in this process (CliRunner), with the test's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def invoke(self, args: list[str]) -> Result:
        with use_settings(self.settings):
            return CliRunner().invoke(cli_module.app, args)


@pytest.fixture()
def cli(tmp_path, monkeypatch) -> Iterator[Cli]:
    for name in [k for k in os.environ if k.startswith("CURATION_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    yield Cli(Settings(data_root=tmp_path / "data", poll_interval_s=0.2))
    for handler in logging.getLogger().handlers:  # what a command without --debug installed on Prefect's console
        for installed in [f for f in handler.filters if isinstance(f, cli_module._NoRunFailureTracebacks)]:
            handler.removeFilter(installed)


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a `curation` process against the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(
        CURATION_DATA_ROOT=str(tmp_path / "data"),
        CURATION_POLL_INTERVAL_S="0.2",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        COLUMNS="200",
        **extra,
    )
    return env


def run_curation(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The installed `curation` command in a process of its own: exit code, stdout and stderr."""
    done = subprocess.run([str(CURATION), *args], check=False, env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def test_demo_curates_the_demo_dataset_and_it_cannot_be_deleted(cli, tmp_path):
    code, output = run_curation(["demo"], subprocess_env(tmp_path))  # as a user runs it, once
    assert code == 0, output
    assert "Completed" in output and "images per class" in output
    assert "agreement with the labels: time" in output
    catalog = Catalog(tmp_path / "data")
    [record] = catalog.records(include_staging=True)
    store = catalog.dataset(record.id)
    assert record.type.value == "demo" and record.status.value == "Completed" and record.counts.accepted == 72
    assert store.frame(Table.FILES).height == 72
    assert store.frame(Table.METADATA).height == 72
    assert store.frame(Table.EMBEDDINGS).height == 72
    # the table writes classes as the viewer does: "dawn/dusk", never the stored "dawn_dusk"
    for cls in store.frame(Table.METADATA)["time"].drop_nulls().unique():
        assert f"│ {class_label(cls)} " in output
    assert "dawn_dusk" not in output

    refused = cli.invoke(["delete", record.id, "--yes"])
    assert refused.exit_code == 1 and "demo dataset and cannot be deleted" in refused.output
    listed = cli.invoke(["list"])
    assert record.id in listed.output

    exported = cli.invoke(["export", record.id, "-o", str(tmp_path / "out.json")])
    assert exported.exit_code == 0
    images = json.loads((tmp_path / "out.json").read_text())["images"]
    assert len(images) == 72 and set(images[0]["tags"]) == {"time", "weather", "road", "location"}

    # teach by example: 4 labelled demo images per time class re-tag the whole dataset from stored embeddings
    labels = pl.read_csv(catalog.demo_images / "labels.csv").group_by("time", maintain_order=True).head(4)
    labels.select("file", "time").write_csv(tmp_path / "teach.csv")
    taught = cli.invoke(["teach", record.id, str(tmp_path / "teach.csv")])
    assert taught.exit_code == 0, taught.output
    base = record.meta_model
    assert base.startswith("efficientnet-lite0-heads-")  # the CNN is the default model
    assert f"re-tagged as {base}+probe-v1" in taught.output
    assert store.load_record().meta_model == f"{base}+probe-v1"

    sampled = cli.invoke(["sample", record.id, "--fraction", "0.4", "--save"])
    assert sampled.exit_code == 0, sampled.output
    assert "sample at 40%: 29 of 72 images" in sampled.output and "saved as dataset" in sampled.output

    again = cli.invoke(["demo"])  # a second run reuses the Completed demo dataset
    assert again.exit_code == 0 and len(catalog.dataset_ids()) == 2  # demo + saved sample


def test_curate_too_few_images_is_a_clear_error(cli, tmp_path):
    write_images(tmp_path / "few", 5)
    result = cli.invoke(["curate", "--name", "few", "--local", str(tmp_path / "few")])
    assert result.exit_code == 1
    assert "need at least 31 acceptable images" in result.output and "got 5" in result.output
    assert last_line(result).startswith("error: not enough images")


def test_curate_of_a_dataset_that_fails_exits_1_with_the_reason(cli, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for i in range(31):
        (broken / f"b{i:02d}.jpg").write_bytes(b"\xff\xd8 junk %d" % i)
    result = cli.invoke(["curate", "--name", "broken", "--local", str(broken)])
    assert result.exit_code == 1, result.output
    assert "reason: all 31 images failed; first error: not a recognised image format" in result.output


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # e.g. the progress bar's thread
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["curate", "--name", "x"], "give exactly one of --container or --local"),
        (["curate", "--name", "x", "--local", "/no/such/folder"], "does not exist"),
        (["curate", "--name", "x", "--container", "c", "--account-name", "a"], "exactly one credential"),
        (["delete", "not-an-id", "--yes"], "not a dataset id"),
        (["delete", "0" * 24, "--yes"], "no dataset 000000000000000000000000"),
        (["track", "0" * 24], "no dataset"),
    ],
)
def test_wrong_input_gets_a_clear_message(cli, args, message):
    result = cli.invoke(args)
    assert result.exit_code == 1
    assert message in result.output
    assert last_line(result).startswith("error:")


def test_a_failed_curation_shows_no_traceback_unless_debug(tmp_path):
    """Prefect's run loggers print the failure with its traceback (about 80 lines) on the real console: without
    --debug the CLI's one-line error is all there is; with --debug the traceback is there too."""
    write_images(tmp_path / "few", 5)
    args = ["curate", "--name", "few", "--local", str(tmp_path / "few")]
    env = subprocess_env(tmp_path)

    code, output = run_curation(args, env)
    assert code == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "not enough images" in line]
    assert len(errors) == 1 and errors[0].startswith("error: not enough images"), output

    code, output = run_curation(["--debug", *args], env)
    assert code == 1, output
    assert "Traceback (most recent call last)" in output and "DatasetTooSmall" in output, output


def test_the_hint_about_an_expired_sas_is_printed_once(azurite, tmp_path):
    """Every image refused (403) because the signed URLs expired: the reason, with its hint, is printed once."""
    container = new_container(azurite)
    upload_images(container, 32)
    env = subprocess_env(
        tmp_path,
        CURATION_AZURE_ACCOUNT_KEY=azurite.account_key,
        CURATION_SAS_EXPIRY_MINUTES="-1",  # signed valid from -5 min to -1 min
        CURATION_ALLOW_PRIVATE_HOSTS="true",  # Azurite is on loopback
    )
    code, output = run_curation(
        ["curate", "--name", "expired", "--container", container.container_name,
         "--account-name", azurite.account_name, "--account-url", azurite.blob_endpoint],
        env,
    )
    assert code == 1, output
    assert "reason: all 32 images failed; first error: HTTP 403" in output, output
    assert output.count("CURATION_SAS_EXPIRY_MINUTES") == 1, output
    assert output.count("expired SAS") == 1, output
    assert azurite.account_key not in output
