"""A hang-up at the edge stops the work three services deep; one budget ends the whole chain.

nginx (its defaults: ``proxy_ignore_client_abort off``, buffering on) → A → B → C, each a
uvicorn serving ``cascade_app`` with ``add_cancellation(app, deadline_header=True)`` and an
``httpx.AsyncClient`` with ``forward_deadline`` to the next (see ``_cascade.py``). No service
has code of its own for either promise:

- a client that hangs up at nginx: nginx closes its connection to A, A's work is cancelled,
  which cancels its httpx call, which closes the connection to B, and so on down to C;
- a budget of A's (``@cancellable(deadline=0.5)``) travels in the deadline header: B and C
  get what is left of it, every service stops when it ends, and A answers 504.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._cascade import SERVICES, Cascade, run_cascade
from ._client import Connection
from ._events import Event, new_request_id, poll
from ._nginx import NGINX
from ._servers import HYPERCORN_TRIO, UVICORN_HTTPTOOLS, Server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not on PATH (Debian: apt-get install nginx-light)"
    ),
    pytest.mark.skipif(
        bool(UVICORN_HTTPTOOLS.missing()), reason=f"needs {UVICORN_HTTPTOOLS.missing()}"
    ),
]

BUDGET = 0.5  # A's, in seconds
WORK = 30.0  # seconds of work each service would do if nothing stopped it
CANCELLED = ("CancelledError", "Cancelled")  # how the work ends: asyncio's, trio's


#: The chains: all uvicorn (asyncio, uvloop), and one whose middle hop runs on trio.
CHAINS: dict[str, dict[str, Server]] = {"uvicorn": {}, "B-on-hypercorn-trio": {"B": HYPERCORN_TRIO}}


@pytest.fixture(scope="module", params=list(CHAINS))
def cascade(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cascade]:
    servers = CHAINS[request.param]
    missing = [m for server in servers.values() for m in server.missing()]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    folder: Path = tmp_path_factory.mktemp("cascade")
    with run_cascade(folder, budget=BUDGET, servers=servers) as running:
        yield running
        print(running.logs())  # shown for a failing test only


def request(cascade: Cascade, rid: str, path: str) -> Connection:
    connection = Connection(cascade.port, timeout=10.0)
    connection.send_request(
        "GET", f"{path}?rid={rid}&seconds={WORK}", headers={"x-request-id": rid}
    )
    return connection


def ticks_after(end: Event, moment: float) -> int:
    """Units of work a service did after ``moment`` (``time.monotonic()``)."""
    return sum(1 for t in end["ticks"] if t > moment)


def test_a_hang_up_at_nginx_stops_the_work_in_every_service(cascade: Cascade) -> None:
    rid = new_request_id()
    with request(cascade, rid, "/chain") as connection:
        cascade.wait_for(rid, "C", "start")
        time.sleep(0.1)  # every service is at work
        closed_at = connection.hang_up()

    for name in SERVICES:
        end = cascade.wait_for(rid, name, "end", timeout=5.0)
        stopped = cascade.wait_for(rid, name, "stopped", timeout=5.0)
        print(f"{name}: stopped {(end['t'] - closed_at) * 1000:.1f} ms after the edge close")
        assert end["ended"] in CANCELLED, end["ended"]
        assert (stopped["cause"], stopped["status"]) == ("client_disconnected", 499)
        assert end["ticks"], f"{name} never worked"
        # 30 s of work, stopped: a few ticks at most while the close travels down.
        assert ticks_after(end, closed_at) < 50, ticks_after(end, closed_at)
    # nginx noted the client's early close, and passed it on by closing its connection to A.
    assert poll(lambda: "prematurely closed" in cascade.proxy.error_log(), timeout=3.0)


def test_a_budget_set_at_a_stops_b_and_c_and_a_answers_504(cascade: Cascade) -> None:
    rid = new_request_id()
    with request(cascade, rid, "/chain/budget") as connection:
        response = connection.read_response()
        answered_at = time.monotonic()

    assert response.status == 504, response.body
    assert response.json()["detail"].startswith("Deadline exceeded"), response.body
    starts = {name: cascade.wait_for(rid, name, "start") for name in SERVICES}
    ends = {name: cascade.wait_for(rid, name, "end", timeout=5.0) for name in SERVICES}
    stops = {name: cascade.wait_for(rid, name, "stopped", timeout=5.0) for name in SERVICES}
    budgets = [starts[name]["budget"] for name in SERVICES]
    print("budgets at the start (s):", budgets)
    print("stops:", {name: (s["cause"], s["status"]) for name, s in stops.items()})

    # One budget: each service got what was left of A's, in the header, and nothing more.
    assert None not in budgets, budgets
    assert BUDGET * 0.5 < budgets[2] < budgets[1] < budgets[0] <= BUDGET, budgets
    assert (stops["A"]["cause"], stops["A"]["status"]) == ("deadline_exceeded", 504)
    for name in ("B", "C"):
        # Its own budget ran out (504 upstream), or A's did first and cut the call (499):
        # stopped either way, within the budget.
        assert stops[name]["cause"] in ("deadline_exceeded", "client_disconnected"), stops[name]
        assert ends[name]["ended"] in CANCELLED, ends[name]
        # Stopped by the time A answered, or while A's close travels down: a tick at most.
        assert ends[name]["t"] <= answered_at + 0.5
        assert ticks_after(ends[name], answered_at) <= 2
    for name in SERVICES:
        ran = ends[name]["t"] - starts[name]["t"]
        assert ran < BUDGET + 0.5, (name, ran)


def test_the_benchmark_measures_both_chains(capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.cascade import measure, report

    guarded = measure(True, runs=2, work=0.5, settle=0.05)
    reference = measure(False, runs=1, work=0.5, settle=0.05)
    report(guarded, reference, work=0.5)

    output = capsys.readouterr().out
    assert "| last of the three |" in output
    # The unguarded chain works on after the close; the guarded one stops (generous bounds).
    assert reference[0].units_after > 20
    assert all(run.units_after < 20 for run in guarded)
