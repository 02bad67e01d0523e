"""``@cancellable`` and ``CancellableRoute`` against real servers, over real loopback sockets.

The servers serve ``tests.e2e.route_app:app`` (this module's ``server`` fixture, from the
pool every real-server test shares). Latencies are the app's ``time.monotonic()`` at the end
of the work minus the client's just before ``close()``: CLOCK_MONOTONIC is shared across
processes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest

from ._checks import PROMPT, assert_cancelled_promptly, assert_ended_quietly, hang_up_mid_request
from ._client import Connection, get
from ._events import Event, EventLog, new_request_id
from ._logs import hang_up_records, trouble_in
from ._params import on_servers, serving
from ._servers import HYPERCORN_TRIO, UVICORN_HTTPTOOLS, ServerView
from .route_app import BIG_FILE_SIZE, HAS_SSE, ITEM_INTERVAL, big_file_content

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.route_app:app")
#: One server per backend: asyncio (uvloop) and trio.
on_both_servers = on_servers([UVICORN_HTTPTOOLS, HYPERCORN_TRIO])

#: Items a stream may still produce after the hang-up: 50 is a whole second of them.
FEW_ITEMS = 50
KiB = 1024


def read_until(
    connection: Connection, enough: Callable[[bytes], bool], timeout: float = 5.0
) -> bytes:
    """Read raw bytes (head and body) until ``enough(data)``; bounded in time and calls."""
    data = b""
    deadline = time.monotonic() + timeout
    for _ in range(10_000):
        if enough(data):
            return data
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection.sock.settimeout(remaining)
        chunk = connection.sock.recv(64 * KiB)
        if not chunk:
            raise ConnectionError(f"closed by the server after {len(data)} bytes: {data[:300]!r}")
        data += chunk
    raise TimeoutError(f"not enough after {len(data)} bytes: {data[:300]!r}")


def download(connection: Connection, target: str) -> tuple[int, int, str]:
    """GET ``target``; return the status, the body's length and its SHA-256.

    Reads exactly Content-Length bytes and leaves the connection open. The body is hashed as
    it arrives: ``Connection.read_response`` grows one bytes object, which takes seconds for
    50 MB. Bounded in time and calls.
    """
    deadline = time.monotonic() + connection.timeout
    connection.send_request("GET", target)
    received = read_until(connection, lambda data: b"\r\n\r\n" in data, connection.timeout)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = (line.partition(":") for line in header_lines)
    headers = {name.strip().lower(): value.strip() for name, _, value in fields}
    length = int(headers["content-length"])
    digest = hashlib.sha256(body)
    size = len(body)
    for _ in range(length // 1024 + 1):  # loopback recv()s bring 64 KiB or more, not < 1 KiB
        if size >= length:
            break
        connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = connection.sock.recv(256 * KiB)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
    return int(status_line.split(" ", 2)[1]), size, digest.hexdigest()


def assert_not_cancelled(server: ServerView) -> None:
    """No 499 record (after one more round trip), a clean log, still serving."""
    assert get(server.port, "/ready").status == 200
    assert hang_up_records(server) == []
    assert not trouble_in(server.log()), server.log()
    assert server.alive()


# -- @cancellable on a plain router ---------------------------------------------------------


@on_both_servers
def test_decorator_cancels_an_async_endpoint_promptly_and_quietly(
    server: ServerView, events: EventLog
) -> None:
    rid, start, closed_at = hang_up_mid_request(server.port, events, "/plain/slow")

    end = events.wait_for(rid, "end", timeout=5.0)
    what = f"{server.server.name}: @cancellable async endpoint cancelled"
    assert_cancelled_promptly(start, end, closed_at, what, cancelled=None)  # it has no ctx
    assert_ended_quietly(server, rid, "GET /plain/slow")


@on_both_servers
def test_decorator_stops_a_sync_endpoint_promptly_and_quietly(
    server: ServerView, events: EventLog
) -> None:
    rid, _, closed_at = hang_up_mid_request(server.port, events, "/plain/sync")

    end = events.wait_for(rid, "end", timeout=5.0)
    latency = end["t"] - closed_at
    print(f"{server.server.name}: the sync endpoint saw is_cancelled {latency * 1000:.2f} ms after")
    assert end["cancelled"] is True
    assert 0 <= latency < PROMPT
    assert_ended_quietly(server, rid, "GET /plain/sync")


# -- CancellableRoute: the method policy and the whole request ------------------------------


@on_both_servers
def test_route_class_cancels_a_get_promptly_and_quietly(
    server: ServerView, events: EventLog
) -> None:
    rid, start, closed_at = hang_up_mid_request(server.port, events, "/route/slow")

    end = events.wait_for(rid, "end", timeout=5.0)
    assert_cancelled_promptly(start, end, closed_at, f"{server.server.name}: GET cancelled")
    assert_ended_quietly(server, rid, "GET /route/slow")


@on_both_servers
def test_route_class_lets_a_post_complete_after_a_hang_up(
    server: ServerView, events: EventLog
) -> None:
    rid, start, closed_at = hang_up_mid_request(
        server.port, events, "/route/write?seconds=0.5", method="POST"
    )

    end = events.wait_for(rid, "end", timeout=5.0)
    assert end["exc"] is None
    assert end["t"] > closed_at
    assert end["t"] - start["t"] >= 0.45  # the whole 0.5 s of work
    assert_not_cancelled(server)


@on_both_servers
def test_route_class_cancels_an_opted_in_post(server: ServerView, events: EventLog) -> None:
    rid, start, closed_at = hang_up_mid_request(server.port, events, "/route/opted", method="POST")

    end = events.wait_for(rid, "end", timeout=5.0)
    what = f"{server.server.name}: opted-in POST cancelled"
    assert_cancelled_promptly(start, end, closed_at, what, cancelled=None)  # it has no ctx
    assert_ended_quietly(server, rid, "POST /route/opted")


@on_both_servers
def test_route_class_cancels_a_slow_dependency_before_the_endpoint(
    server: ServerView, events: EventLog
) -> None:
    rid, start, closed_at = hang_up_mid_request(
        server.port, events, "/route/dep", started="dep-start"
    )

    end = events.wait_for(rid, "dep-end", timeout=5.0)
    what = f"{server.server.name}: dependency cancelled"
    assert_cancelled_promptly(start, end, closed_at, what, cancelled=None)  # it has no ctx
    assert_ended_quietly(server, rid, "GET /route/dep")
    assert events.find(rid, "endpoint") is None


# -- CancellableRoute: streaming bodies ------------------------------------------------------

STREAMS = [
    pytest.param("/route/stream", "text/plain", b" line ", id="StreamingResponse"),
    pytest.param("/route/jsonl", "application/jsonl", b'{"i":', id="jsonl"),
    pytest.param(
        "/route/sse",
        "text/event-stream",
        b"data: ",
        id="sse",
        marks=pytest.mark.skipif(not HAS_SSE, reason="fastapi.sse is not importable"),
    ),
]


def items_of(events: EventLog, rid: str) -> list[Event]:
    return [event for event in events.of(rid) if event["event"] == "item"]


@on_both_servers
@pytest.mark.parametrize(("path", "media_type", "marker"), STREAMS)
def test_streaming_body_stops_promptly_after_a_hang_up(
    server: ServerView, events: EventLog, path: str, media_type: str, marker: bytes
) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{path}?rid={rid}")
        received = read_until(connection, lambda data: data.count(marker) >= 3)
        closed_at = connection.hang_up("fin")

    end = events.wait_for(rid, "stream-end", timeout=5.0)
    latency = end["t"] - closed_at
    items = items_of(events, rid)
    late = [item for item in items if item["t"] > closed_at]
    print(f"{server.server.name}: {path} stopped {latency * 1000:.2f} ms after, {len(late)} late")
    assert f"content-type: {media_type}".encode() in received.lower()
    assert end["cancelled"] is True
    assert 0 <= latency < PROMPT
    assert len(late) < FEW_ITEMS
    assert_ended_quietly(server, rid, f"GET {path}")
    assert len(items_of(events, rid)) == len(items) < 1000  # and none after the end


@on_both_servers
def test_file_response_stops_promptly_after_a_hang_up(server: ServerView, events: EventLog) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/route/file?rid={rid}")
        read_until(connection, lambda data: len(data) >= 256 * KiB)
        closed_at = connection.hang_up("fin")

    end = events.wait_for(rid, "file-end", timeout=5.0)
    latency = end["t"] - closed_at
    print(
        f"{server.server.name}: FileResponse stopped {latency * 1000:.2f} ms after, "
        f"{end['sent'] // KiB} KiB sent, {end['late_sends']} late sends"
    )
    assert end["cancelled"] is True
    assert 0 <= latency < PROMPT
    assert end["late_sends"] < FEW_ITEMS
    assert end["sent"] < BIG_FILE_SIZE
    assert_ended_quietly(server, rid, "GET /route/file")


@on_both_servers
def test_full_streaming_response_arrives_whole_and_its_background_task_completes(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    lines = 25
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/route/stream?rid={rid}&lines={lines}&background=true")
        response = connection.read_response()
        # The client stays while the task runs: the disconnect every server queues after
        # a complete response must not be taken for a hang-up.
        done = events.wait_for(rid, "background-done", timeout=3.0)

    assert response.status == 200
    assert response.body == "".join(f"{rid} line {i:04d}\n" for i in range(lines)).encode()
    end = events.wait_for(rid, "stream-end")
    assert end == {**end, "cancelled": False, "produced": lines, "exc": None}
    assert end["t"] - events.wait_for(rid, "item")["t"] >= (lines - 1) * ITEM_INTERVAL * 0.9
    assert events.find(rid, "background-stopped") is None
    assert done["t"] - end["t"] >= 0.15  # the task's whole 0.2 s sleep
    assert_not_cancelled(server)


@on_both_servers
def test_full_file_response_arrives_whole_and_its_background_task_completes(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    with Connection(server.port, timeout=30.0) as connection:
        status, size, sha256 = download(connection, f"/route/file?rid={rid}&background=true")
        # The client stays until the task is done (see the Content-Length test below).
        done = events.wait_for(rid, "background-done", timeout=5.0)

    assert status == 200
    assert size == BIG_FILE_SIZE
    assert sha256 == hashlib.sha256(big_file_content()).hexdigest()
    end = events.wait_for(rid, "file-end")
    # file-end comes last: FileResponse runs its background task before it returns.
    assert end == {**end, "cancelled": False, "sent": BIG_FILE_SIZE, "late_sends": 0, "exc": None}
    assert end["t"] >= done["t"]
    assert events.find(rid, "background-stopped") is None
    assert_not_cancelled(server)


@on_both_servers
@pytest.mark.parametrize(
    "client_stays",
    [pytest.param(True, id="client-stays"), pytest.param(False, id="client-closes")],
)
def test_client_closing_after_the_last_content_length_byte_is_no_hang_up(
    server: ServerView, events: EventLog, client_stays: bool
) -> None:
    rid = new_request_id()
    size = 1024 * KiB
    with Connection(server.port) as connection:
        status, received, _ = download(connection, f"/route/sized?rid={rid}&size={size}")
        if client_stays:
            events.wait_for(rid, "background-done", timeout=3.0)
        # else: the client has the whole response and closes, as curl does when it exits

    assert (status, received) == (200, size)
    # Starlette's own disconnect listener may stop the generator's last await (it does so
    # without fastapi-hangup too), but the request was not abandoned, and Starlette runs the
    # background task either way.
    assert events.wait_for(rid, "stream-end", timeout=3.0)["cancelled"] is False
    events.wait_for(rid, "background-done", timeout=3.0)
    assert_not_cancelled(server)


@on_both_servers
def test_keep_alive_connection_is_reused_after_guarded_streaming_responses(
    server: ServerView, events: EventLog
) -> None:
    rids = [new_request_id() for _ in range(3)]
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/route/stream?rid={rids[0]}&lines=5")
        streamed = connection.read_response()
        connection.send_request("GET", f"/route/jsonl?rid={rids[1]}&items=3")
        json_lines = connection.read_response()
        connection.send_request("GET", f"/route/slow?rid={rids[2]}&seconds=0.05")
        slow = connection.read_response()

    assert [r.status for r in (streamed, json_lines, slow)] == [200, 200, 200]
    assert streamed.body == "".join(f"{rids[0]} line {i:04d}\n" for i in range(5)).encode()
    assert json_lines.body == b'{"i":0}\n{"i":1}\n{"i":2}\n'
    assert slow.json() == {"rid": rids[2]}
    assert events.wait_for(rids[0], "stream-end")["cancelled"] is False
    assert events.wait_for(rids[1], "stream-end")["cancelled"] is False
    assert events.wait_for(rids[2], "end")["cancelled"] is False
    assert_not_cancelled(server)
