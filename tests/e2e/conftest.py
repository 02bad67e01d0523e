"""Fixtures for the real-server tests, and the per-server result file behind the docs' matrix.

A test asks for ``server``, parametrized (indirect) with a :class:`Server`; it gets a view of
a running server serving ``tests.e2e.app:app``, or the app its module names (see
``_params.serving``). Consecutive tests on the same server and app share one process (see
:class:`ServerPool`), and the tests are ordered by server, so that each server starts about
once per app and run.

An interrupted run cleans up too: SIGTERM is turned into a KeyboardInterrupt, as Ctrl-C is,
so that pytest tears the fixtures down (stopping every server), and whatever a cut-short
teardown left is killed at exit (see ``_spawn.py``).
"""

from __future__ import annotations

import atexit
import os
import signal
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from ._events import EventLog
from ._matrix import MATRIX_ENV, MatrixRecorder
from ._params import serving
from ._servers import ALL_SERVERS, UVICORN_H11, Server, ServerPool, ServerView, run_server
from ._services import missing_services, postgres, redis
from ._spawn import kill_all

_SERVER_ORDER = {server: rank for rank, server in enumerate(ALL_SERVERS.values())}
_recorder = MatrixRecorder.from_env()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "check(label, table='On each server', column=None): the row (and optionally the column) of "
        f"this test in the server matrix that ${MATRIX_ENV} asks for",
    )
    config.stash[_SIGTERM_HANDLER] = signal.signal(signal.SIGTERM, _interrupt)
    atexit.register(kill_all)


def pytest_unconfigure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, config.stash[_SIGTERM_HANDLER])


_SIGTERM_HANDLER = pytest.StashKey[Callable[[int, FrameType | None], Any] | int | None]()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Python's default for SIGTERM is to die on the spot, fixtures and servers left as they
    # are; as a KeyboardInterrupt, pytest stops the run and tears everything down.
    raise KeyboardInterrupt(f"pytest got {signal.Signals(signum).name}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests that take a server server by server, each server's tests in file order.

    They keep the slots they had, so every other test stays where it was; only their order
    among themselves changes, so that the pool starts each server about once per run.
    """
    slots = [index for index, item in enumerate(items) if _server_param(item) is not None]
    ordered = sorted(slots, key=lambda index: (*_rank(items[index]), index))
    moved = [items[index] for index in ordered]
    for slot, item in zip(slots, moved, strict=True):
        items[slot] = item


def _rank(item: pytest.Item) -> tuple[int, str]:
    server = _server_param(item)
    assert server is not None
    return _SERVER_ORDER.get(server, len(_SERVER_ORDER)), server.name


def _server_param(item: pytest.Item) -> Server | None:
    callspec = getattr(item, "callspec", None)
    param = callspec.params.get("server") if callspec else None
    return param if isinstance(param, Server) else None


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    """The one server process the current test (and maybe the next ones) talks to."""
    pool = ServerPool(tmp_path_factory.mktemp("servers"))
    try:
        yield pool
    finally:
        pool.close()


server = serving("tests.e2e.app:app")


@pytest.fixture
def events(request: pytest.FixtureRequest, tmp_path: Path) -> EventLog:
    """What the app under test records: the events file of ``server`` if the test has one."""
    if "server" in request.fixturenames:
        view: ServerView = request.getfixturevalue("server")
        return view.events
    return EventLog(tmp_path / "events.jsonl")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Hand each phase's report to the matrix recorder, when ``$FASTAPI_HANGUP_MATRIX`` is set."""
    report = yield
    if _recorder is not None:
        _recorder.add(item, report)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _recorder is not None and os.environ.get("PYTEST_XDIST_WORKER") is None:
        _recorder.close()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """PostgreSQL, Redis and a slow upstream (``tests.e2e.upstream_app``) on loopback.

    Servers started meanwhile find them in their environment: ``HANGUP_E2E_PG``,
    ``HANGUP_E2E_REDIS`` and ``HANGUP_E2E_UPSTREAM`` (a port) for the services app,
    ``DATABASE_URL``, ``REDIS_URL`` and ``UPSTREAM_URL`` for examples/databases.py. Skipped
    if a service is not installed, failed instead with ``FASTAPI_HANGUP_REQUIRE_SERVICES``.
    """
    missing = missing_services()
    if missing:
        if os.environ.get("FASTAPI_HANGUP_REQUIRE_SERVICES"):
            pytest.fail(f"the services tests need {', '.join(missing)}")
        pytest.skip(f"the services tests need {', '.join(missing)}")
    folder = tmp_path_factory.mktemp("services")
    with (
        postgres() as (_, dsn),
        redis(folder / "redis") as (_, redis_url),
        run_server(UVICORN_H11, "tests.e2e.upstream_app:app", folder / "upstream.log") as up,
        pytest.MonkeyPatch.context() as env,
    ):
        upstream = f"http://127.0.0.1:{up.port}"
        for name, value in {
            "HANGUP_E2E_PG": dsn,
            "HANGUP_E2E_REDIS": redis_url,
            "HANGUP_E2E_UPSTREAM": str(up.port),
            "DATABASE_URL": dsn,
            "REDIS_URL": redis_url,
            "UPSTREAM_URL": upstream,
        }.items():
            env.setenv(name, value)
        yield {"dsn": dsn, "redis": redis_url, "upstream": up.port}
