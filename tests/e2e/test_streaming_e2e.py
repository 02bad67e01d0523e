"""Streamed responses on real servers: a hang-up mid-stream stops the stream promptly.

Two ways to stream from a guarded endpoint (see ``app.py``):

* ``/route/stream``, a route of a ``CancellableRoute`` router: the request's context covers
  the streamed body, so the hang-up cancels the generator through fastapi-hangup, and the
  request ends with one 499 record.
* ``/guarded/stream``, a plain route with ``Depends(cancel_ctx)``: the context's work ends
  when the endpoint returns the response, before the body streams. Starlette's
  ``StreamingResponse`` then races the body against its own listener on the raw
  ``receive``, and that listener stops the stream. On hypercorn and daphne, which deliver
  ``http.disconnect`` only once, this works only if fastapi-hangup's watcher let go of the
  raw ``receive`` in time (it must not keep the one disconnect for itself).
"""

from __future__ import annotations

from typing import Literal

import pytest

from ._checks import assert_cancelled_promptly, assert_whole_stream
from ._client import Connection, get
from ._events import EventLog, new_request_id, poll
from ._logs import hang_up_records, settled_log, trouble_in
from ._params import STREAM_CHECK, STREAM_TARGET, on_servers
from ._servers import ServerView

pytestmark = pytest.mark.e2e

on_every_server = on_servers()

Via = Literal["route", "dependency"]


def _stream_hang_up(server: ServerView, events: EventLog, via: Via) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{STREAM_TARGET[via]}?rid={rid}&count=200&interval=0.05")
        connection.read_until(b"tick 1\n")  # the body is streaming
        start = events.wait_for(rid, "start")
        closed_at = connection.hang_up("fin")

    end = events.wait_for(rid, "end", timeout=5.0)
    # Only the route's context still covers the body: it alone sees (and logs) the hang-up.
    what = f"{server.server.name} {via}: stream stopped"
    assert_cancelled_promptly(start, end, closed_at, what, cancelled=via == "route")
    assert 1 <= end["sent"] < 150
    if via == "route":
        assert poll(lambda: hang_up_records(server, rid), timeout=3.0)
    assert get(server.port, "/ready").status == 200
    log = settled_log(server)
    assert len(hang_up_records(server, rid)) == (1 if via == "route" else 0), log
    assert not trouble_in(log), log
    assert server.alive()


@pytest.mark.check(STREAM_CHECK["route"])
@on_every_server
def test_hang_up_stops_the_stream_of_a_cancellable_route(
    server: ServerView, events: EventLog
) -> None:
    _stream_hang_up(server, events, "route")


@pytest.mark.check(STREAM_CHECK["dependency"])
@on_every_server
def test_hang_up_stops_the_stream_of_a_plain_route_with_the_dependency(
    server: ServerView, events: EventLog
) -> None:
    _stream_hang_up(server, events, "dependency")


@pytest.mark.check("a StreamingResponse arrives whole when the client stays")
@on_every_server
@pytest.mark.parametrize("via", ["route", "dependency"])
def test_stream_arrives_whole_when_the_client_stays(
    server: ServerView, events: EventLog, via: Via
) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{STREAM_TARGET[via]}?rid={rid}&count=5&interval=0.01")
        response = connection.read_response()

    assert_whole_stream(server, events, rid, response)
