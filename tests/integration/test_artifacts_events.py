"""A finished run publishes a Markdown artifact and emits curation.dataset.completed for downstream flows."""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import DatasetStore, Table
from tests.images import write_images
from tests.waiting import wait_for


def read_artifact(key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactCollectionFilter, ArtifactCollectionFilterKey

    async def read():
        async with get_client() as client:
            only = ArtifactCollectionFilter(key=ArtifactCollectionFilterKey(any_=[key]))
            return await client.read_latest_artifacts(artifact_filter=only)

    return [a for a in asyncio.run(read()) if a.key == key]


def read_flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    return asyncio.run(read())


def query_events(name: str, dataset_id: str) -> list[dict]:
    """The events of this name about the dataset that Prefect has stored so far."""
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"curation.dataset.{dataset_id}"]}}, "limit": 10}
    return httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()["events"]


def read_events(name: str, dataset_id: str) -> list[dict]:
    """The events of this name about the dataset, once Prefect has stored one (events are written asynchronously:
    waited for, however long a busy machine takes; the deadline only guards a hang)."""
    return wait_for(lambda: query_events(name, dataset_id), f"event {name} for dataset {dataset_id}", poll_s=0.2)


def test_completed_run_publishes_artifact_and_event(tmp_path, settings):
    write_images(tmp_path / "images", 32)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("with report", LocalStorageConfig(path=tmp_path / "images"), wait=True)

    # The results are stored, so the service was told to forget the shard jobs (it keeps nothing it need not).
    from curation.inference import shard_jobs
    from curation.inference.client import JobNotFound
    from curation.inference.replicas import Replicas

    store = DatasetStore(settings.data_root, dataset_id)
    jobs = shard_jobs.read_jobs(store)
    with Replicas(cr.service_settings()) as replicas:
        client = replicas.client()
        for job in jobs:
            with pytest.raises(JobNotFound):
                client.job_status(job.job_id)
    assert jobs

    metadata = store.frame(Table.METADATA)
    expected = {c: metadata[c].fill_null("None").value_counts().rows() for c in ("time", "weather", "road", "location")}

    [artifact] = read_artifact(f"curation-{dataset_id}")
    assert artifact.type == "markdown"
    text = artifact.data
    assert f"## with report ({dataset_id}): Completed" in text
    assert "33 found, 33 accepted, 32 processed, 1 failed." in text
    seconds, rate = re.search(r"Took ([\d.]+) s \(([\d.]+) images/s\)", text).groups()
    assert float(seconds) > 0 and float(rate) == pytest.approx(33 / float(seconds), rel=0.02)  # however long it took
    for category, counts in expected.items():  # per category: label -> count, None included
        row = re.search(rf"^\| {category} \| (.*) \|$", text, re.M).group(1)
        parsed = {label: int(n) for label, n in (pair.rsplit(" ", 1) for pair in row.split(" · "))}
        assert {label: n for label, n in parsed.items() if n} == dict(counts)
    assert "| failure | images |\n|---|---|\n| not a recognised image format | 1 |" in text, text  # by reason
    assert f"`CURATION_DATA_ROOT={settings.data_root.resolve()} curation viewer`" in text
    assert "panel serve dashboards/" in text and f"dataset `{dataset_id}`" in text

    [table] = read_artifact(f"curation-{dataset_id}-classes")
    assert table.type == "table"
    rows = json.loads(table.data)
    assert {(r["category"], r["class"]): r["images"] for r in rows if r["images"]} == {
        (c, label): n for c, counts in expected.items() for label, n in counts
    }

    [event] = read_events("curation.dataset.completed", dataset_id)
    assert event["payload"]["dataset_id"] == dataset_id
    # Artifacts and event belong to the curate-dataset run the user started, not to its track-curation subflow.
    top = read_flow_run(artifact.flow_run_id)
    assert top.parent_task_run_id is None and top.parameters.get("name") == "with report"
    assert read_flow_run(table.flow_run_id).id == top.id
    roles = {(r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]}
    assert (f"prefect.flow-run.{top.id}", "flow-run") in roles, roles
    assert event["payload"]["counts"]["accepted"] == 33 and event["payload"]["counts"]["failed"] == 1
    assert event["payload"]["class_counts"]["time"]["None"] == dict(expected["time"]).get("None", 0)


def test_failed_dataset_fails_the_flow_run_and_emits_the_failed_event(tmp_path, settings):
    """A dataset whose every image fails: the SDK returns its id, the Prefect flow run is Failed with the reason,
    and curation.dataset.failed carries it for downstream flows."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    images = tmp_path / "images"
    images.mkdir()
    for i in range(31):
        (images / f"broken_{i:02d}.jpg").write_bytes(b"\xff\xd8 not really a jpeg %d" % i)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("all broken", LocalStorageConfig(path=images), wait=True)
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed" and "all 31 images failed" in record.failure_reason

    async def runs():
        async with get_client() as client:
            return await client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=20)

    recent = asyncio.run(runs())
    states = {r.state_type.value for r in recent if r.parameters.get("name") == "all broken"}
    assert states == {"FAILED"}, states  # curate-dataset's run is Failed, not Completed
    tracked = [r for r in recent if r.parameters.get("dataset_id") == dataset_id]
    assert tracked and {r.state_type.value for r in tracked} == {"FAILED"}
    assert f"dataset {dataset_id} Failed: all 31 images failed" in tracked[0].state.message

    [event] = read_events("curation.dataset.failed", dataset_id)
    assert event["payload"]["dataset_id"] == dataset_id and "all 31 images failed" in event["payload"]["failure_reason"]
    assert not query_events("curation.dataset.completed", dataset_id)  # not waited for: it should never come
    [artifact] = read_artifact(f"curation-{dataset_id}")
    assert "Failed" in artifact.data


def test_sample_dataset_publishes_its_artifact_and_event_on_its_own_run(tmp_path, settings):
    """sample-dataset, triggered on its own, shows what it did in its Artifacts tab and tells downstream flows."""
    write_images(tmp_path / "images", 32)
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("to sample", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    report = cr.sample_dataset(dataset_id, seed=3, strategy="random")

    [artifact] = read_artifact(f"sampled-{dataset_id}")
    run = read_flow_run(artifact.flow_run_id)
    assert run.parameters == {"dataset_id": dataset_id, "seed": 3, "strategy": "random"}
    assert f"## to sample (`{dataset_id}`): sampled" in artifact.data and "| strategy | random |" in artifact.data
    assert f"| images | {report['images']} |" in artifact.data
    [event] = read_events("curation.dataset.sampled", dataset_id)
    assert event["payload"]["seed"] == 3 and event["payload"]["images"] == report["images"]
    assert (f"prefect.flow-run.{run.id}", "flow-run") in {
        (r["prefect.resource.id"], r["prefect.resource.role"]) for r in event["related"]
    }
