"""The real service over HTTP, with faults injected at its front door."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from curation import AuthenticationError, Curation
from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.server import serve_in_thread
from curation.settings import Settings
from tests.images import write_images
from tests.integration.conftest import SERVICE_KEY
from tests.integration.helpers import leftovers


class FailFirstStatusCalls:
    """Answer the first `failures` job-status requests with 503, then pass everything to the real app."""

    def __init__(self, app: ASGIApp, failures: int) -> None:
        self.app, self.remaining, self.seen = app, failures, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_status = scope["type"] == "http" and scope["method"] == "GET" and scope["path"].count("/") == 3
        if is_status and scope["path"].startswith("/v1/jobs/"):
            self.seen += 1
            if self.remaining > 0:
                self.remaining -= 1
                await JSONResponse({"detail": "busy"}, status_code=503)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def test_service_503_twice_then_the_run_completes(tmp_path, settings):
    service_settings = Settings(allow_file_urls=True, service_workers=2)
    app = FailFirstStatusCalls(create_app(service_settings, CpuModel(), api_keys=[SERVICE_KEY]), failures=2)
    running = serve_in_thread(app, SecretStr(SERVICE_KEY))
    try:
        write_images(tmp_path / "images", 31)
        cr = Curation(settings=settings.model_copy(update={"service_url": running.url}))
        from curation import LocalStorageConfig

        dataset_id = cr.curate_dataset("flaky", LocalStorageConfig(path=tmp_path / "images"))
        assert cr.tracing_curation_task(dataset_id) == "Completed"
        assert app.seen >= 3 and app.remaining == 0
        assert cr.get_dataset(dataset_id).counts.processed == 31
    finally:
        running.stop()


def test_wrong_api_key_is_a_clear_error_and_leaves_no_dataset(tmp_path, settings):
    from curation import LocalStorageConfig

    write_images(tmp_path / "images", 31)
    cr = Curation(api_key="not-the-key", settings=settings)
    with pytest.raises(AuthenticationError, match="rejected the API key"):
        cr.curate_dataset("wrong key", LocalStorageConfig(path=tmp_path / "images"))
    assert leftovers(settings.data_root) == []


def test_remote_service_refuses_local_files(tmp_path, settings):
    """Only the embedded service reads file:// URLs: through the remote one every image errors, none is lost,
    and a dataset whose every image failed ends Failed with the reason."""
    from curation import LocalStorageConfig

    write_images(tmp_path / "images", 31)
    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset("local via remote", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed" and record.counts.failed == 31
    assert record.failure_reason == (
        "all 31 images failed; first error: refused: file:// URLs are only read by the embedded service"
    )
