"""Child process for the service-restart tests: the inference service as `curation serve` runs it (settings from the
environment, the configured backend), except that its model answers only the first PASS batches.

Usage: python -m tests.integration.gated_service_child PORT PASS
The batch after them is held in the model: the process prints "holding" (once PASS batches' results are in the
job journal: one batch runs at a time with CURATION_SERVICE_WORKERS=1) and waits there to be killed. The parent
kills it on that line, so every kill lands mid-job whatever the machine's load: the job cannot finish first.
"""

from __future__ import annotations

import sys
import threading

import uvicorn

from curation.inference.models.backends import load_backend
from curation.inference.service.app import create_app
from curation.settings import get_settings


class HeldAfter:
    """The backend, answering `passes` batches and holding every later one (until the process is killed)."""

    process_safe = False  # predict runs in the service's own thread, where the count and the hold live

    def __init__(self, backend, passes: int) -> None:
        self._backend = backend
        self._passes = passes
        self._lock = threading.Lock()

    def __getattr__(self, name: str):  # name, embedding_name, embedding_dim, input_side, taxonomy...
        return getattr(self._backend, name)

    def predict(self, images):
        with self._lock:
            self._passes -= 1
            hold = self._passes < 0
            if hold and self._passes == -1:
                print("holding", flush=True)
        if hold:
            threading.Event().wait()
        return self._backend.predict(images)


def main() -> None:
    port, passes = int(sys.argv[1]), int(sys.argv[2])
    settings = get_settings()
    backend = load_backend(settings.model, settings)
    uvicorn.run(create_app(settings, HeldAfter(backend, passes)), host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
