"""What the app under test did, written by the server process and read by the test process.

The app appends one JSON line per event to the file named by ``$FASTAPI_HANGUP_E2E_EVENTS``.
Each line carries ``time.monotonic()``: CLOCK_MONOTONIC is shared by every process on Linux,
so the test can subtract its own timestamps from the server's (hang-up latency).
This module has no side effects on import, so both sides can use it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

EVENTS_ENV = "FASTAPI_HANGUP_E2E_EVENTS"
#: A folder for large files (``route_app.py``'s), shared by the servers of a test session.
FILES_ENV = "FASTAPI_HANGUP_E2E_FILES"

#: Prefix of every line the app's ``fastapi_hangup`` log handler writes to stderr.
LOG_TAG = "[e2e-app]"

Event = dict[str, Any]
T = TypeVar("T")


def new_request_id() -> str:
    """A short id that ties a request to its events."""
    return uuid.uuid4().hex[:12]


def record(rid: str, event: str, **fields: Any) -> None:
    """Append one event; a single ``O_APPEND`` write, so lines never interleave."""
    line = {"rid": rid, "event": event, "t": time.monotonic(), "pid": os.getpid(), **fields}
    fd = os.open(os.environ[EVENTS_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


class EventLog:
    """The test side: reads the events file, and waits (bounded) for an event to appear."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def of(self, rid: str) -> list[Event]:
        """Every event recorded so far for the request ``rid``, in order."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        # A line being written right now may be incomplete: only whole lines count.
        lines = text.split("\n")[:-1]
        return [event for event in map(json.loads, lines) if event["rid"] == rid]

    def find(self, rid: str, event: str) -> Event | None:
        """The first ``event`` of request ``rid``, if it was recorded already."""
        return next((e for e in self.of(rid) if e["event"] == event), None)

    def wait_for(self, rid: str, event: str, timeout: float = 5.0) -> Event:
        """Return the first ``event`` of request ``rid``, waiting up to ``timeout`` seconds.

        Raises:
            AssertionError: if it was not recorded in time.
        """
        found = poll(lambda: self.find(rid, event), timeout)
        if found is None:
            raise AssertionError(
                f"no {event!r} event for request {rid} within {timeout} s; "
                f"its events: {self.of(rid)}"
            )
        return found


def poll(fetch: Callable[[], T], timeout: float, interval: float = 0.005) -> T:
    """Call ``fetch`` until it returns something truthy or ``timeout`` seconds pass.

    Returns the last value ``fetch`` returned (falsy if time ran out).
    """
    deadline = time.monotonic() + timeout
    value = fetch()
    for _ in range(int(timeout / interval) + 1):
        if value or time.monotonic() >= deadline:
            break
        time.sleep(interval)
        value = fetch()
    return value
