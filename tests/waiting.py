"""Waiting on events in tests (issue #17): a test synchronises on something that happens (a line printed, a file
present, a job state), never on how long something takes. A deadline only guards against a hang: it is generous
(minutes, for a busy machine) and it is never what a test asserts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_S = 180.0  # how long a test waits for an event before it fails as hung
POLL_S = 0.05


def wait_for(
    condition: Callable[[], T],
    what: str,
    deadline_s: float = DEADLINE_S,
    detail: Callable[[], object] | None = None,
    poll_s: float = POLL_S,
) -> T:
    """The first truthy value of `condition()`, checked until `deadline_s` has passed; then the test fails naming
    `what` did not happen (with `detail()`, what the test could see, when given)."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            seen = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"{what} did not happen within {deadline_s:.0f} s{seen}")
        time.sleep(poll_s)
