"""Hang-ups on a real uvicorn in front of real PostgreSQL, Redis and a slow upstream.

On asyncio a hang-up reaches the work once, as ``Task.cancel()`` does, so the libraries'
own cleanup (a driver cancelling its query and resetting its connection, a transaction's
rollback, a lock's release, a pool taking its connection back) runs to the end. For each
pattern the test hangs up ``N`` times mid-request and counts what a level-triggered
cancellation used to leave behind: warnings and errors of any library, lost cleanup writes,
connections destroyed and reopened, sessions idle in transaction, locks still held, upstream
streams still open. Every count must be 0.

PostgreSQL, Redis and the upstream run as subprocesses on loopback for this module (see
``_services.py``); ``.ci/run`` installs them.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ._client import Connection, get
from ._events import EventLog, new_request_id, poll
from ._params import on_servers, serving
from ._servers import UVICORN_HTTPTOOLS, ServerView
from ._services import sql

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]

N = 50  # hang-ups per pattern
server = serving("tests.e2e.services_app:app")
on_uvicorn = on_servers([UVICORN_HTTPTOOLS])


def hang_up_on(server: ServerView, events: EventLog, path: str) -> str:
    """GET ``path?rid=...``, hang up once its work has started, wait for the work's end."""
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{path}?rid={rid}")
        events.wait_for(rid, "start", timeout=10)
        connection.hang_up()
    events.wait_for(rid, "end", timeout=10)
    return rid


def stats(server: ServerView) -> dict[str, Any]:
    response = get(server.port, "/stats")
    assert response.status == 200, response.body
    result: dict[str, Any] = response.json()
    return result


def settled_stats(server: ServerView) -> dict[str, Any]:
    """The stats once every cleanup has finished (they stop changing), bounded in time."""
    previous = stats(server)
    for _ in range(20):
        time.sleep(0.1)
        current = stats(server)
        if current == previous:
            return current
        previous = current
    return previous


#: The app's pools at their largest (asyncpg 8, SQLAlchemy 4 + 4, psycopg 8), and the test's own.
_BACKENDS_AT_MOST = 8 + 8 + 8 + 1

PATTERNS = {
    "finally-write": "asyncpg",
    "asyncpg": "asyncpg",
    "sqlalchemy": "sqlalchemy",
    "psycopg": "psycopg",
    "redis-lock": "redis",
    "redis-pop": "redis",
    "httpx": None,
    "aiohttp": None,
}


@on_uvicorn
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_hang_ups_leave_nothing_behind(
    server: ServerView, events: EventLog, services: dict[str, Any], pattern: str
) -> None:
    dsn = services["dsn"]
    before = stats(server)
    rids = [hang_up_on(server, events, f"/{pattern}") for _ in range(N)]
    after = settled_stats(server)

    problems = after["problems"][len(before["problems"]) :]
    client = PATTERNS[pattern]
    reopened = 0 if client is None else after["opened"][client] - before["opened"][client]
    # SQLAlchemy replaces a connection whose query was cancelled, on purpose; none else is lost.
    replaced = after["invalidated"].get(client, 0) - before["invalidated"].get(client, 0)
    if pattern == "redis-pop":
        # redis-py closes a connection whose reply is still owed (the cancelled BLPOP's), on
        # purpose, whatever the way of cancelling: at most one new connection per hang-up.
        replaced = min(after["opened"]["redis"] - before["opened"]["redis"], N + 1)
    checked_out = after["checked_out"].get(client, 0)
    backends = sql(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    )
    rid_list = "{" + ",".join(rids) + "}"
    finally_writes = sql(
        dsn, "SELECT count(*) FROM writes WHERE kind = 'finally' AND rid = ANY(%s)", rid_list
    )
    abandoned_writes = sql(
        dsn, "SELECT count(*) FROM writes WHERE kind = 'abandoned' AND rid = ANY(%s)", rid_list
    )
    idle_in_transaction = sql(
        dsn, "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
    )
    held_locks = 0
    if pattern.startswith("redis"):
        held_locks = sum(1 for rid in rids if _redis_exists(services["redis"], f"lock:{rid}"))
    open_upstream = get(services["upstream"], "/open").json()["open"]
    print(
        f"{pattern}: {N} hang-ups; problems {len(problems)}, connections reopened {reopened} "
        f"(replaced on purpose {replaced}), still checked out {checked_out}, "
        f"lost finally writes {N - finally_writes if pattern == 'finally-write' else 0}, "
        f"abandoned writes committed {abandoned_writes}, idle in transaction "
        f"{idle_in_transaction}, locks held {held_locks}, upstream streams open {open_upstream}"
    )
    assert problems == []
    assert reopened == replaced
    assert checked_out == 0
    assert backends <= _BACKENDS_AT_MOST
    if pattern == "finally-write":
        assert finally_writes == N
    assert abandoned_writes == 0
    assert idle_in_transaction == 0
    assert held_locks == 0
    assert poll(lambda: get(services["upstream"], "/open").json()["open"] == 0, 5.0)


def _redis_exists(url: str, key: str) -> bool:
    import redis as sync_redis

    with sync_redis.Redis.from_url(url) as client:
        return bool(client.exists(key))


@on_uvicorn
@pytest.mark.parametrize("pattern", ["asyncpg", "sqlalchemy", "psycopg"])
def test_the_query_is_stopped_on_the_server(
    server: ServerView, events: EventLog, services: dict[str, Any], pattern: str
) -> None:
    dsn = services["dsn"]
    active = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()"
    )
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/{pattern}?rid={rid}")
        events.wait_for(rid, "start", timeout=10)
        assert poll(lambda: sql(dsn, active, f"%pg_sleep(30) /* {pattern} */%") == 1, 5.0)
        closed_at = connection.hang_up()
    # The query would run 30 s; stopped, it leaves within the poll's bound. How soon (the
    # goal is 200 ms) is printed, not asserted: that is speed, not behaviour.
    assert poll(lambda: sql(dsn, active, f"%pg_sleep(30) /* {pattern} */%") == 0, 5.0)
    gone_after = time.monotonic() - closed_at
    print(f"{pattern}: the query left pg_stat_activity {gone_after * 1e3:.0f} ms after the hang-up")


@on_uvicorn
def test_a_shielded_commit_lands_exactly_once(
    server: ServerView, events: EventLog, services: dict[str, Any]
) -> None:
    rids = [hang_up_on(server, events, "/shielded-write") for _ in range(N)]
    rid_list = "{" + ",".join(rids) + "}"
    query = "SELECT count({}) FROM writes WHERE kind = 'shielded' AND rid = ANY(%s)"
    landed = sql(services["dsn"], query.format("*"), rid_list)
    distinct = sql(services["dsn"], query.format("DISTINCT rid"), rid_list)
    print(f"shielded commits: {landed} rows for {N} hang-ups ({distinct} requests)")
    assert (landed, distinct) == (N, N)
