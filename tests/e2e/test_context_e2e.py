"""The context's features against real servers: deadlines, and a worker process killed on hang-up.

The servers serve ``tests.e2e.context_app:app`` (this module's ``server`` fixture; the one
of ``conftest.py`` serves ``tests.e2e.app:app``; both take their process from one pool). The
worker processes of ``ctx.run_in_process`` are children of the server's worker, so the test
finds them among the server's descendants with psutil.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest

from tests._processes import is_gone, kill_leftovers, pool_workers

from ._client import Connection, Response, get
from ._events import EventLog, new_request_id, poll
from ._logs import hang_up_records, settled_log, status_records, trouble_in
from ._params import on_servers, serving
from ._servers import (
    DAPHNE,
    GUNICORN_UVICORN,
    UVICORN_H11,
    UVICORN_HTTPTOOLS,
    ServerView,
)
from .context_app import BUDGET, STREAM_LINES

pytestmark = pytest.mark.e2e

#: A deadline during a streaming body (route class): the route returns without finishing the
#: response (no final body message), so that the client cannot take the cut body for a whole
#: one. hypercorn and granian then close the connection quietly; these servers do not.
UVICORN_LOGS_AN_UNFINISHED_RESPONSE = (
    "LIMITATION (documented): after a deadline mid-stream the route class returns without "
    "completing the response (a faked end would make a cut stream look whole); "
    "uvicorn then logs 'ERROR: ASGI callable returned without completing "
    "response.' for every such request"
)
DAPHNE_KEEPS_AN_UNFINISHED_RESPONSE_OPEN = (
    "LIMITATION (documented): after a deadline mid-stream the route class returns without "
    "completing the response (a faked end would make a cut stream look whole); "
    "daphne neither ends the body nor closes the connection, so the client "
    "waits for the rest of the stream until its own timeout"
)


server = serving("tests.e2e.context_app:app")


# -- A deadline, the client still waiting -----------------------------------------------------


@on_servers()
@pytest.mark.parametrize("entry", ["dependency", "decorator", "route"])
def test_deadline_answers_504_json_over_a_real_socket(
    server: ServerView, events: EventLog, entry: str
) -> None:
    rid = new_request_id()

    started = time.monotonic()
    response = get(server.port, f"/deadline/{entry}?rid={rid}")
    took = time.monotonic() - started

    print(f"{server.server.name} {entry}: {response.status} after {took * 1000:.1f} ms")
    assert response.status == 504
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "detail": f"Deadline exceeded: the request took longer than its {BUDGET:g} s budget"
    }
    assert BUDGET <= took < BUDGET + 2.0
    start = events.wait_for(rid, "start")
    assert events.wait_for(rid, "end")["exc"] == start["cancelled_exc"]


@on_servers()
@pytest.mark.parametrize("entry", ["dependency", "decorator", "route"])
def test_deadline_ends_the_request_with_one_504_record_and_no_errors(
    server: ServerView, events: EventLog, entry: str
) -> None:
    rid = new_request_id()

    get(server.port, f"/deadline/{entry}?rid={rid}")
    events.wait_for(rid, "end")

    assert poll(lambda: status_records(server, 504, rid), timeout=3.0)
    log = settled_log(server)
    assert len(status_records(server, 504, rid)) == 1, log
    assert trouble_in(log) == []
    assert hang_up_records(server, rid) == []


def read_cut_stream(server: ServerView, rid: str) -> Response | None:
    """GET ``/deadline/stream`` (1 s of lines, 0.2 s budget); None if the server closed the
    connection mid-body, which is how a cut stream ends over HTTP/1.1.

    Raises:
        TimeoutError: if the client heard nothing more for 3 s (the connection stays open).
    """
    with Connection(server.port, timeout=3.0) as connection:
        connection.send_request("GET", f"/deadline/stream?rid={rid}")
        try:
            return connection.read_response()
        except ConnectionError:
            return None


@on_servers(xfail={DAPHNE: DAPHNE_KEEPS_AN_UNFINISHED_RESPONSE_OPEN})
def test_deadline_during_a_stream_cuts_it_without_a_504(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()

    response = read_cut_stream(server, rid)

    assert events.wait_for(rid, "end")["exc"] is not None  # cancelled at the budget
    if response is not None:  # the server ended the body cleanly, though truncated
        assert response.status == 200
        assert response.body.count(b"\n") < STREAM_LINES


@on_servers(
    xfail={
        UVICORN_HTTPTOOLS: UVICORN_LOGS_AN_UNFINISHED_RESPONSE,
        UVICORN_H11: UVICORN_LOGS_AN_UNFINISHED_RESPONSE,
        GUNICORN_UVICORN: UVICORN_LOGS_AN_UNFINISHED_RESPONSE,
    }
)
def test_deadline_during_a_stream_leaves_no_error_in_the_server_log(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()

    with contextlib.suppress(TimeoutError):  # daphne: see the test above
        read_cut_stream(server, rid)
    events.wait_for(rid, "end")

    log = settled_log(server)
    assert trouble_in(log) == [], log


# -- run_in_process: the worker process is killed on a real hang-up ----------------------------


def hang_up_on_busy_worker(
    server: ServerView, events: EventLog, pid_file: Path
) -> tuple[str, float]:
    """Start ``spin(30 s)`` in a worker process of the server, hang up once it is busy, and
    return the request id and how long after the ``close()`` the worker process was gone.

    Two checks of the promise: the app itself looks at the worker the moment
    ``run_in_process`` gives up (it must be dead by then: killed and reaped, or a zombie),
    and the test sees it gone from outside, within 5 s by the clock.
    """
    rid = new_request_id()
    workers: list[psutil.Process] = []
    try:
        with Connection(server.port) as connection:
            connection.send_request(
                "GET", f"/offload/spin?rid={rid}&pid_file={quote(str(pid_file))}"
            )
            assert poll(pid_file.exists, timeout=15.0), "the worker never started the work"
            busy_pid = int(pid_file.read_text())
            workers = pool_workers(psutil.Process(server.pid))  # recorded while it works
            assert busy_pid in [w.pid for w in workers]
            (busy,) = [w for w in workers if w.pid == busy_pid]
            assert not is_gone(busy)
            closed_at = connection.hang_up("fin")
        seen = _watch_until_gone(busy, closed_at, timeout=5.0)
        gone_after = time.monotonic() - closed_at
        end = events.wait_for(rid, "end")
        assert end["cancelled"] is True
        assert end["worker"] in ("gone", "zombie"), (
            f"run_in_process gave up while its worker still ran (state {end['worker']}); "
            f"seen from the test after the hang-up: {seen}"
        )
        assert is_gone(busy), f"the worker process still runs 5 s after the hang-up: {seen}"
    finally:
        kill_leftovers(workers)
    return rid, gone_after


def _watch_until_gone(
    process: psutil.Process, since: float, timeout: float
) -> list[tuple[float, str]]:
    """Poll ``process`` until it is gone, ``timeout`` seconds after ``since`` at most (by the
    clock: under load 1 ms sleeps take longer), and return its states as they changed, each
    with the seconds after ``since`` it was first seen."""
    seen: list[tuple[float, str]] = []
    for _ in range(int(timeout * 1000)):  # also bounded in count: each turn sleeps 1 ms
        now = time.monotonic() - since
        if now >= timeout:
            break
        state = _state_of(process)
        if not seen or seen[-1][1] != state:
            seen.append((round(now, 4), state))
        if is_gone(process):
            break
        time.sleep(0.001)
    return seen


def _state_of(process: psutil.Process) -> str:
    try:
        return f"{process.status()} (parent {process.ppid()})"
    except psutil.Error as exc:
        return f"gone ({type(exc).__name__})"


@on_servers()
def test_run_in_process_worker_is_killed_on_a_real_hang_up(
    server: ServerView, events: EventLog, tmp_path: Path
) -> None:
    _, gone_after = hang_up_on_busy_worker(server, events, tmp_path / "worker.pid")

    print(f"{server.server.name}: worker process gone {gone_after * 1000:.1f} ms after close()")
    assert gone_after < 0.5  # promised: ~immediately (SIGKILL); the work would take 30 s


@on_servers()
def test_run_in_process_hang_up_ends_quietly_with_one_499_record(
    server: ServerView, events: EventLog, tmp_path: Path
) -> None:
    rid, _ = hang_up_on_busy_worker(server, events, tmp_path / "worker.pid")

    log = settled_log(server)
    assert len(hang_up_records(server, rid)) == 1, log
    assert trouble_in(log) == [], log


@on_servers()
def test_run_in_process_works_again_after_a_worker_was_killed(
    server: ServerView, events: EventLog, tmp_path: Path
) -> None:
    hang_up_on_busy_worker(server, events, tmp_path / "worker.pid")

    response = get(server.port, f"/offload/square?rid={new_request_id()}&n=12")

    assert response.status == 200
    assert response.json() == {"square": 144}
