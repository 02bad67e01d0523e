"""``add_cancellation(app)`` on real servers, with FastAPI's native telemetry on.

The servers serve ``tests.e2e.app_wide_app:app``, whose endpoints know nothing of
fastapi-hangup. A real client hangs up mid-request; the work stops, the ``on_stop`` hook
hears of it once, the server span says so, and the Prometheus scrape counts it.
"""

from __future__ import annotations

import pytest

from ._checks import assert_cancelled_promptly, assert_ended_quietly
from ._client import Connection, get
from ._events import EventLog, new_request_id
from ._params import on_servers, serving
from ._servers import HYPERCORN_TRIO, UVICORN_HTTPTOOLS, ServerView

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.app_wide_app:app")
#: One server per backend: asyncio (uvloop) and trio.
on_both_servers = on_servers([UVICORN_HTTPTOOLS, HYPERCORN_TRIO])


def hang_up_on(server: ServerView, events: EventLog, path: str) -> tuple[str, float]:
    """GET ``path`` (request id as ``?rid=`` and ``x-request-id``), hang up once it works."""
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{path}?rid={rid}", headers={"x-request-id": rid})
        events.wait_for(rid, "start")
        closed_at = connection.hang_up()
    return rid, closed_at


@on_both_servers
@pytest.mark.parametrize(
    ("path", "route"),
    [("/slow", "/slow"), ("/items/7/slow", "/items/{item_id}/slow")],
    ids=["own-route", "included-after-the-call"],
)
def test_one_call_stops_reports_and_traces_a_hang_up(
    server: ServerView, events: EventLog, path: str, route: str
) -> None:
    rid, closed_at = hang_up_on(server, events, path)

    assert_cancelled_promptly(
        events.wait_for(rid, "start"),
        events.wait_for(rid, "end"),
        closed_at,
        f"GET {route}",
        cancelled=None,
    )
    assert_ended_quietly(server, rid, f"GET {route}")
    events.wait_for(rid, "stopped")
    (stopped,) = [e for e in events.of(rid) if e["event"] == "stopped"]  # once
    assert (stopped["route"], stopped["cause"], stopped["status_code"]) == (
        route,
        "client_disconnected",
        499,
    )
    span = events.wait_for(rid, "span")
    print(f"the server span: {span['name']} {span['attributes']}")
    attributes = span["attributes"]
    assert span["name"] == f"GET {route}"
    assert attributes["http.response.status_code"] == 499
    assert attributes["fastapi_hangup.cause"] == "client_disconnected"
    assert attributes["fastapi_hangup.work.duration"] > 0
    assert attributes["fastapi_hangup.stop.latency"] >= 0


@on_both_servers
def test_the_scrape_counts_the_stopped_requests(server: ServerView, events: EventLog) -> None:
    def stopped_count() -> float:
        scrape = get(server.port, "/metrics").body.decode()
        labels = (
            'http_route="/items/{item_id}/slow"',
            'fastapi_hangup_cause="client_disconnected"',
        )
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in scrape.splitlines()
            if line.startswith("fastapi_hangup_requests_stopped_total{")
            and all(label in line for label in labels)
        ]
        return sum(counts)

    before = stopped_count()
    rid, _ = hang_up_on(server, events, "/items/8/slow")
    events.wait_for(rid, "stopped")
    scrape = get(server.port, "/metrics").body.decode()
    print("the scrape, fastapi_hangup lines:")
    print("\n".join(line for line in scrape.splitlines() if "fastapi_hangup" in line))
    assert stopped_count() == before + 1
