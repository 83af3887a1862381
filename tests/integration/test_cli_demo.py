"""The CLI as a user runs it: the demo on the embedded service, and clear errors for wrong input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from curation.dataset.catalog import Catalog, Table
from tests.images import write_images

CURATION = Path(sys.executable).parent / "curation"


@dataclass
class Result:
    exit_code: int
    output: str


class Cli:
    """Runs the installed `curation` command in a subprocess, against the session's Prefect server."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def invoke(self, args: list[str]) -> Result:
        done = subprocess.run([str(CURATION), *args], env=self.env, capture_output=True, text=True, timeout=600)
        return Result(done.returncode, done.stdout + done.stderr)


def last_line(result: Result) -> str:
    """Our own closing message (Prefect's run logs, tracebacks included, come before it)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    return next(line for line in lines if line.startswith("error:"))


@pytest.fixture()
def cli(tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(
        CURATION_DATA_ROOT=str(tmp_path / "data"),
        CURATION_POLL_INTERVAL_S="0.2",
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        COLUMNS="200",
    )
    return Cli(env)


def test_demo_curates_the_demo_dataset_and_it_cannot_be_deleted(cli, tmp_path):
    result = cli.invoke(["demo"])
    assert result.exit_code == 0, result.output
    assert "Completed" in result.output and "images per class" in result.output
    assert "agreement with the labels: time" in result.output
    catalog = Catalog(tmp_path / "data")
    [record] = catalog.records(include_staging=True)
    store = catalog.dataset(record.id)
    assert record.type.value == "demo" and record.status.value == "Completed" and record.counts.accepted == 72
    assert store.frame(Table.FILES).height == 72
    assert store.frame(Table.METADATA).height == 72
    assert store.frame(Table.EMBEDDINGS).height == 72

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
