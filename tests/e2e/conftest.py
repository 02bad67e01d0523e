"""Fixtures for the real-server tests: one fresh server per test, and the app's event log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._events import EVENTS_ENV, EventLog
from ._servers import RunningServer, Server, run_server

APP = "tests.e2e.app:app"


@pytest.fixture
def events(tmp_path: Path) -> EventLog:
    """What the app under test records, read from this process."""
    return EventLog(tmp_path / "events.jsonl")


@pytest.fixture
def server(
    request: pytest.FixtureRequest, tmp_path: Path, events: EventLog
) -> Iterator[RunningServer]:
    """A fresh server running ``tests.e2e.app:app``; parametrize it (indirect) with a Server."""
    spec: Server = request.param
    missing = spec.missing()
    if missing:
        pytest.skip(f"{spec.name} needs {', '.join(missing)}")
    with run_server(
        spec, APP, tmp_path / "server.log", env={EVENTS_ENV: str(events.path)}, ready_path="/ready"
    ) as running:
        yield running
    # Captured output is shown only for a failing test: then the evidence is right there.
    print(f"----- output of {running!r} -----\n{running.log()}")
    if events.path.exists():
        print(f"----- events recorded by the app -----\n{events.path.read_text()}")
