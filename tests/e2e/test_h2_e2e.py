"""The core promises over HTTP/2 cleartext (h2c, prior knowledge), on hypercorn and granian.

The HTTP/2 hang-up is ``RST_STREAM(CANCEL)``: one request ends, the connection and its other
streams stay. The client (``_h2client.py``) sends it once the endpoint has started, then
checks that the same connection still serves a new stream. Closing the whole connection is
the other way an HTTP/2 client leaves; on hypercorn a final ``send()`` after that blocks for
ever (SERVERS.md), so fastapi-hangup must send nothing. uvicorn has no HTTP/2, and daphne's
needs TLS with ALPN (it closes an h2c connection at once): they are not in this module.
"""

from __future__ import annotations

import random
from typing import Literal

import pytest

pytest.importorskip("h2", reason="the HTTP/2 client needs the h2 package")

from ._checks import (
    assert_background_task_ran_on,
    assert_cancelled_promptly,
    assert_ended_quietly,
    assert_upload_arrived,
    assert_upload_cancelled_quietly,
    assert_whole_stream,
    assert_work_runs_to_its_end,
)
from ._events import Event, EventLog, new_request_id, poll
from ._h2client import H2Connection
from ._logs import SENT_SLOW_RESPONSE, hang_up_records, settled_log, trouble_in
from ._params import STREAM_CHECK, STREAM_TARGET, on_servers
from ._servers import H2C_SERVERS, ServerView

pytestmark = pytest.mark.e2e

on_every_h2c_server = on_servers(H2C_SERVERS)
HangUp = Literal["rst_stream", "close"]
both_hang_ups = pytest.mark.parametrize("how", ["rst_stream", "close"])

MiB = 1024 * 1024


def reset_mid_request(
    connection: H2Connection, events: EventLog, target: str, how: HangUp = "rst_stream"
) -> tuple[str, Event, float]:
    """GET ``target`` on a new stream and, once the endpoint started, reset it or hang up."""
    rid = new_request_id()
    stream = connection.send_request("GET", f"{target}?rid={rid}")
    start = events.wait_for(rid, "start")
    closed_at = connection.reset(stream) if how == "rst_stream" else connection.hang_up()
    return rid, start, closed_at


def serves_a_new_stream(connection: H2Connection) -> bool:
    """Whether the connection still answers a guarded request on a fresh stream."""
    rid = new_request_id()
    response = connection.read_response(connection.send_request("GET", f"/guarded/quick?rid={rid}"))
    return response.status == 200 and response.json() == {"rid": rid, "cancelled": False}


@pytest.mark.check("a hang-up cancels the endpoint within a second")
@on_every_h2c_server
@both_hang_ups
def test_hang_up_cancels_the_guarded_endpoint_within_a_second(
    server: ServerView, events: EventLog, how: HangUp
) -> None:
    with H2Connection(server.port) as connection:
        rid, start, closed_at = reset_mid_request(connection, events, "/guarded/slow", how)
        end = events.wait_for(rid, "end", timeout=5.0)

    assert_cancelled_promptly(start, end, closed_at, f"{server.server.name} {how}: cancelled")


@pytest.mark.check("the request ends quietly: one 499 record, no error, no response")
@on_every_h2c_server
@both_hang_ups
def test_hang_up_ends_the_request_quietly_with_one_499_record(
    server: ServerView, events: EventLog, how: HangUp
) -> None:
    with H2Connection(server.port) as connection:
        rid, _, _ = reset_mid_request(connection, events, "/guarded/slow", how)
        events.wait_for(rid, "end", timeout=5.0)
        assert_ended_quietly(server, rid, "GET /guarded/slow")

    assert not SENT_SLOW_RESPONSE.search(settled_log(server)), server.log()


@pytest.mark.check("the server keeps serving after a hang-up")
@on_every_h2c_server
@both_hang_ups
def test_server_keeps_serving_after_a_hang_up(
    server: ServerView, events: EventLog, how: HangUp
) -> None:
    with H2Connection(server.port) as connection:
        rid, _, _ = reset_mid_request(connection, events, "/guarded/slow", how)
        events.wait_for(rid, "end", timeout=5.0)
        if how == "rst_stream":  # the same connection serves the next stream
            assert serves_a_new_stream(connection)

    with H2Connection(server.port) as fresh:
        assert serves_a_new_stream(fresh)
    assert server.alive()


@pytest.mark.check("HTTP/2: a reset stream leaves its sibling streams alone")
@on_every_h2c_server
def test_reset_stream_leaves_the_other_streams_of_the_connection_alone(
    server: ServerView, events: EventLog
) -> None:
    sibling = new_request_id()
    with H2Connection(server.port) as connection:
        sibling_stream = connection.send_request("GET", f"/guarded/slow?rid={sibling}&seconds=0.5")
        events.wait_for(sibling, "start")
        rid, _, _ = reset_mid_request(connection, events, "/guarded/slow")
        assert events.wait_for(rid, "end", timeout=5.0)["cancelled"] is True
        response = connection.read_response(sibling_stream)

    assert response.status == 200
    assert response.json() == {"rid": sibling}
    assert events.wait_for(sibling, "end") == {
        **events.wait_for(sibling, "end"),
        "cancelled": False,
        "exc": None,
    }
    assert hang_up_records(server, sibling) == []


@pytest.mark.check("control: an unguarded endpoint is not stopped")
@on_every_h2c_server
def test_hang_up_does_not_stop_an_unguarded_endpoint(server: ServerView, events: EventLog) -> None:
    rid = new_request_id()
    with H2Connection(server.port) as connection:
        stream = connection.send_request("GET", f"/unguarded/slow?rid={rid}&seconds=1.5")
        start = events.wait_for(rid, "start")
        connection.reset(stream)
        assert_work_runs_to_its_end(server, events, rid, start)


@pytest.mark.check("client left ≠ response finished: background task runs on")
@on_every_h2c_server
def test_background_task_outlives_the_post_response_disconnect(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    with H2Connection(server.port) as connection:
        response = connection.read_response(
            connection.send_request("GET", f"/guarded/background?rid={rid}")
        )
        # The connection stays while the task runs (the stream itself is closed).
        done = events.wait_for(rid, "background-done", timeout=3.0)

    assert response.status == 200
    assert response.json() == {"rid": rid}
    assert_background_task_ran_on(server, events, rid, done)


@pytest.mark.check("keep-alive: guarded requests one after another")
@on_every_h2c_server
def test_connection_serves_guarded_requests_one_after_another(
    server: ServerView, events: EventLog
) -> None:
    rids = [new_request_id() for _ in range(3)]
    with H2Connection(server.port) as connection:
        responses = [
            connection.read_response(connection.send_request("GET", f"/guarded/quick?rid={rid}"))
            for rid in rids
        ]

    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.json() for r in responses] == [{"rid": rid, "cancelled": False} for rid in rids]
    assert not [record for rid in rids for record in hang_up_records(server, rid)]


@pytest.mark.check("an upload arrives whole (8 MiB)")
@on_every_h2c_server
def test_upload_arrives_whole_through_the_guarded_endpoint(
    server: ServerView, events: EventLog
) -> None:
    data = random.Random(20).randbytes(8 * MiB)
    rid = new_request_id()
    pieces = [data[offset : offset + 300_000] for offset in range(0, len(data), 300_000)]
    with H2Connection(server.port) as connection:
        stream = connection.send_request(
            "POST",
            f"/guarded/upload?rid={rid}",
            headers={"content-length": str(len(data))},
            body=pieces,
        )
        response = connection.read_response(stream)

    assert_upload_arrived(response, data, events, rid)


@pytest.mark.check("a hang-up during an upload cancels the endpoint quietly")
@on_servers(H2C_SERVERS)
def test_reset_during_an_upload_cancels_the_endpoint_quietly(
    server: ServerView, events: EventLog
) -> None:
    """The HTTP/2 form of the HTTP/1.1 test of the same name (see its docstring)."""
    rid = new_request_id()
    with H2Connection(server.port) as connection:
        stream = connection.send_request(
            "POST", f"/guarded/upload?rid={rid}", body=bytes(MiB), end=False
        )
        start = events.wait_for(rid, "start")
        connection.reset(stream)
        end = events.wait_for(rid, "end", timeout=5.0)
        assert_upload_cancelled_quietly(server, rid, start, end)


@pytest.mark.parametrize(
    "via",
    [
        pytest.param("route", marks=pytest.mark.check(STREAM_CHECK["route"])),
        pytest.param("dependency", marks=pytest.mark.check(STREAM_CHECK["dependency"])),
    ],
)
@on_every_h2c_server
def test_reset_stops_a_streamed_response(
    server: ServerView, events: EventLog, via: Literal["route", "dependency"]
) -> None:
    rid = new_request_id()
    with H2Connection(server.port) as connection:
        stream = connection.send_request("GET", f"{STREAM_TARGET[via]}?rid={rid}")
        connection.read_until(stream, b"tick 1\n")
        start = events.wait_for(rid, "start")
        reset_at = connection.reset(stream)
        end = events.wait_for(rid, "end", timeout=5.0)
        if via == "route":
            assert poll(lambda: hang_up_records(server, rid), timeout=3.0)
        assert serves_a_new_stream(connection)

    what = f"{server.server.name} {via}: stream stopped"
    assert_cancelled_promptly(start, end, reset_at, what, cancelled=via == "route")
    assert 1 <= end["sent"] < 150
    log = settled_log(server)
    assert len(hang_up_records(server, rid)) == (1 if via == "route" else 0), log
    assert not trouble_in(log), log


@pytest.mark.check("a StreamingResponse arrives whole when the client stays")
@on_every_h2c_server
@pytest.mark.parametrize("via", ["route", "dependency"])
def test_stream_arrives_whole_when_the_client_stays(
    server: ServerView, events: EventLog, via: Literal["route", "dependency"]
) -> None:
    rid = new_request_id()
    with H2Connection(server.port) as connection:
        target = f"{STREAM_TARGET[via]}?rid={rid}&count=5&interval=0.01"
        response = connection.read_response(connection.send_request("GET", target))

    assert_whole_stream(server, events, rid, response)
