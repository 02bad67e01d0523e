"""The recipes of docs/databases.md (examples/databases.py) on a real uvicorn and real services.

Each recipe answers when its client stays, and after a hang-up leaves the service as it was:
the query gone from PostgreSQL, no session idle in transaction, the lock released, the
upstream stream closed, and the pool still serving the next request.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ._client import Connection, get
from ._events import new_request_id, poll
from ._params import on_servers, serving
from ._servers import UVICORN_HTTPTOOLS, ServerView
from ._services import sql

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("services")]

server = serving("examples.databases:app")
on_uvicorn = on_servers([UVICORN_HTTPTOOLS])

_SLEEPING = (
    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
    "AND query LIKE '%%FROM pg_sleep(%%' AND pid <> pg_backend_pid()"
)
_IDLE_IN_TRANSACTION = (
    "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%%'"
)


def request(server: ServerView, method: str, target: str) -> Any:
    with Connection(server.port) as connection:
        connection.send_request(method, target, headers={"Connection": "close"})
        response = connection.read_response()
    assert response.status == 200, response.body
    return response.json()


@on_uvicorn
@pytest.mark.parametrize("library", ["asyncpg", "sqlalchemy", "psycopg"])
def test_a_report_query_stops_on_the_server(
    server: ServerView, services: dict[str, Any], library: str
) -> None:
    dsn = services["dsn"]
    assert request(server, "GET", f"/report/{library}") == {"rows": 1}
    for _ in range(3):
        with Connection(server.port) as connection:
            connection.send_request("GET", f"/report/{library}?seconds=30")
            assert poll(lambda: sql(dsn, _SLEEPING) == 1, 5.0), "the query never started"
            connection.hang_up()
        assert poll(lambda: sql(dsn, _SLEEPING) == 0, 5.0), "the query still runs"
    assert poll(lambda: sql(dsn, _IDLE_IN_TRANSACTION) == 0, 5.0)
    assert request(server, "GET", f"/report/{library}") == {"rows": 1}  # the pool still serves


@on_uvicorn
def test_the_budget_stops_the_query_with_a_504(
    server: ServerView, services: dict[str, Any]
) -> None:
    assert request(server, "GET", "/report/budget") == {"rows": 1}
    with Connection(server.port) as connection:
        connection.send_request("GET", "/report/budget?seconds=30")
        assert connection.read_response().status == 504
    assert poll(lambda: sql(services["dsn"], _SLEEPING) == 0, 5.0)
    assert sql(services["dsn"], _IDLE_IN_TRANSACTION) == 0


@on_uvicorn
def test_an_order_is_placed_once_whether_or_not_the_client_stays(
    server: ServerView, services: dict[str, Any]
) -> None:
    stayed, left = new_request_id(), new_request_id()
    assert request(server, "POST", f"/orders/{stayed}") == {"placed": stayed}
    with Connection(server.port) as connection:
        connection.send_request("POST", f"/orders/{left}")
        connection.hang_up()
    count = "SELECT count(*) FROM orders WHERE id = %s"
    assert poll(lambda: sql(services["dsn"], count, left) == 1, 5.0)
    time.sleep(0.2)  # a second insert would have failed on the key, but look once more
    assert [sql(services["dsn"], count, rid) for rid in (stayed, left)] == [1, 1]


@on_uvicorn
def test_a_waiting_worker_releases_its_lock_on_hang_up(
    server: ServerView, services: dict[str, Any]
) -> None:
    import redis as sync_redis

    worker = new_request_id()
    with sync_redis.Redis.from_url(services["redis"]) as cache:
        cache.rpush("jobs", "job-1")
        assert request(server, "GET", f"/jobs/next?worker={worker}") == {"job": "job-1"}
        with Connection(server.port) as connection:
            connection.send_request("GET", f"/jobs/next?worker={worker}")
            assert poll(lambda: cache.exists(f"worker:{worker}"), 5.0), "no lock taken"
            connection.hang_up()
        assert poll(lambda: not cache.exists(f"worker:{worker}"), 5.0), "the lock is held"
        cache.rpush("jobs", "job-2")  # no abandoned pop took it: the next worker gets it
        assert request(server, "GET", f"/jobs/next?worker={worker}") == {"job": "job-2"}


@on_uvicorn
def test_the_proxy_closes_the_upstream_stream_on_hang_up(
    server: ServerView, services: dict[str, Any]
) -> None:
    def streams_open() -> int:
        count: int = get(services["upstream"], "/open").json()["open"]
        return count

    assert streams_open() == 0
    with Connection(server.port) as connection:
        connection.send_request("GET", "/proxy")
        assert poll(lambda: streams_open() == 1, 5.0), "the upstream stream never opened"
        connection.hang_up()
    assert poll(lambda: streams_open() == 0, 5.0), "the upstream stream stays open"
