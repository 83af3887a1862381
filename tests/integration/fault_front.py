"""An ASGI front that injects faults before the REAL service app, served over real HTTP.

Faults are planned per call index: the n-th job-status call and the n-th results call each get an action.
Every call is recorded (arrival time, action) so tests can check how the client reacted, e.g. that it waited
for Retry-After, or gave up on a hung call after its own request timeout.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import SecretStr
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from curation.inference.models.cpu import CpuModel
from curation.inference.service.app import create_app
from curation.inference.service.server import RunningService, serve_in_thread
from curation.settings import Settings

STATUS_PATH = re.compile(r"/v1/jobs/[0-9a-f]+")
RESULTS_PATH = re.compile(r"/v1/jobs/[0-9a-f]+/results")

# Actions: "pass" (the real app answers), "500", "503", "429" (Retry-After: 1), "hang" (answer only after
# hang_s, long after the client's timeout), "drop" (headers and half the real body, then the connection is cut),
# "stop" (stop the whole server, then cut this call).
PASS = "pass"


@dataclass
class Call:
    at: float  # time.monotonic() when the request arrived
    action: str
    query: str = ""
    path: str = ""


@dataclass
class FaultFront:
    app: ASGIApp
    status_plan: list[str] = field(default_factory=list)
    results_plan: list[str] = field(default_factory=list)
    hang_s: float = 8.0
    status_calls: list[Call] = field(default_factory=list)
    results_calls: list[Call] = field(default_factory=list)
    on_stop: Callable[[], None] | None = None  # set by serve(): stops the server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if RESULTS_PATH.fullmatch(path):
            calls, plan = self.results_calls, self.results_plan
        elif STATUS_PATH.fullmatch(path):
            calls, plan = self.status_calls, self.status_plan
        else:
            await self.app(scope, receive, send)
            return
        action = plan[len(calls)] if len(calls) < len(plan) else PASS
        calls.append(Call(time.monotonic(), action, scope.get("query_string", b"").decode(), path))
        await self._act(action, scope, receive, send)

    async def _act(self, action: str, scope: Scope, receive: Receive, send: Send) -> None:
        if action in ("500", "503"):
            await JSONResponse({"detail": "internal error: injected"}, status_code=int(action))(scope, receive, send)
        elif action == "429":
            await JSONResponse({"detail": "slow down"}, status_code=429, headers={"Retry-After": "1"})(scope, receive, send)
        elif action == "hang":
            await asyncio.sleep(self.hang_s)  # the client should have given up long before
            await self.app(scope, receive, send)
        elif action == "drop":
            await self._drop_mid_body(scope, receive, send)
        elif action == "stop":
            assert self.on_stop is not None
            self.on_stop()
            raise ConnectionAbortedError("injected: the service went down")
        else:
            await self.app(scope, receive, send)

    async def _drop_mid_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the real status line, headers (with the full Content-Length) and half the body, then fail."""
        messages: list[Message] = []

        async def capture(message: Message) -> None:
            messages.append(message)

        await self.app(scope, receive, capture)
        start, body = messages[0], b"".join(m.get("body", b"") for m in messages[1:])
        assert start["status"] == 200 and len(body) > 100, (start, len(body))
        await send(start)
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise ConnectionResetError("injected: connection dropped mid-response")


def serve(front_kwargs: dict, api_key: str, workers: int = 2) -> tuple[FaultFront, RunningService]:
    """The real app (file:// and loopback URLs allowed, as a remote service serving local folders) behind a FaultFront."""
    service_settings = Settings(allow_file_urls=True, allow_private_hosts=True, service_workers=workers)
    front = FaultFront(create_app(service_settings, CpuModel(), api_keys=[api_key]), **front_kwargs)
    running = serve_in_thread(front, SecretStr(api_key))

    def stop_soon() -> None:  # called from the server's own loop: stop it from another thread
        threading.Thread(target=running.stop, daemon=True).start()

    front.on_stop = stop_soon
    return front, running
