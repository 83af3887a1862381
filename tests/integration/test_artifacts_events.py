"""A finished run publishes a Markdown artifact and emits curation.dataset.completed for downstream flows."""

from __future__ import annotations

import asyncio
import time

import httpx

from curation import Curation, LocalStorageConfig
from tests.images import write_images


def read_artifact(key: str):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_latest_artifacts()

    return [a for a in asyncio.run(read()) if a.key == key]


def read_events(name: str, dataset_id: str) -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    body = {"filter": {"event": {"name": [name]}, "resource": {"id": [f"curation.dataset.{dataset_id}"]}}, "limit": 10}
    for _ in range(50):  # events are written asynchronously
        events = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=body).json()["events"]
        if events:
            return events
        time.sleep(0.2)
    return []


def test_completed_run_publishes_artifact_and_event(tmp_path, settings):
    write_images(tmp_path / "images", 32)
    (tmp_path / "images" / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    cr = Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))
    dataset_id = cr.curate_dataset("with report", LocalStorageConfig(path=tmp_path / "images"), wait=True)

    [artifact] = read_artifact(f"curation-{dataset_id}")
    assert "with report" in artifact.data and "Completed" in artifact.data
    assert "| time |" in artifact.data and "images/s" in artifact.data and "panel serve dashboards/" in artifact.data
    assert "| failure | images |" in artifact.data

    [event] = read_events("curation.dataset.completed", dataset_id)
    assert event["payload"]["dataset_id"] == dataset_id
    assert event["payload"]["counts"]["accepted"] == 33 and event["payload"]["counts"]["failed"] == 1
