"""The core promises against real servers, over real loopback sockets.

Each test gets a fresh server process (see ``conftest.py``) running ``tests.e2e.app:app``.
The app records its events with ``time.monotonic()``, which is shared across processes, so
a hang-up's latency is the app's time of cancellation minus the client's time just before
``close()``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator

import psutil
import pytest

from ._client import Connection, HangUp, get
from ._events import LOG_TAG, Event, EventLog, new_request_id, poll
from ._servers import SERVERS, RunningServer

pytestmark = pytest.mark.e2e

on_every_server = pytest.mark.parametrize("server", SERVERS, indirect=True, ids=str)
both_hang_ups = pytest.mark.parametrize("how", ["fin", "rst"])

MiB = 1024 * 1024

#: Text that must never be in a server's output after a guarded request ended.
TROUBLE = (
    "Traceback",
    "Exception in ASGI application",
    "Error in ASGI",
    "response already started",
    "returned without starting response",
    "socket.send() raised exception",
    "ERROR",
)


#: An access-log line saying a response to /guarded/slow went out: uvicorn writes
#: ``"GET /guarded/slow?rid=... HTTP/1.1" 200 OK``, hypercorn ``"GET /guarded/slow 1.1" 200 29``
#: (and ``"GET /guarded/slow 1.1" - -`` for a request whose client left: that one is fine).
SENT_SLOW_RESPONSE = re.compile(r'"GET /guarded/slow[^"]*" \d{3}')


def hang_up_records(server: RunningServer) -> list[str]:
    """The fastapi_hangup log records for abandoned requests in the server's output."""
    prefix = f"{LOG_TAG} INFO fastapi_hangup:"
    lines = server.log().splitlines()
    return [line for line in lines if line.startswith(prefix) and " 499 " in line]


def hang_up_mid_request(
    server: RunningServer, events: EventLog, target: str, how: HangUp
) -> tuple[str, Event, float]:
    """GET ``target``, hang up once the endpoint has started; return (rid, start, hang-up time)."""
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"{target}?rid={rid}")
        start = events.wait_for(rid, "start")
        closed_at = connection.hang_up(how)
    return rid, start, closed_at


@on_every_server
@both_hang_ups
def test_hang_up_cancels_the_guarded_endpoint_within_a_second(
    server: RunningServer, events: EventLog, how: HangUp
) -> None:
    rid, start, closed_at = hang_up_mid_request(server, events, "/guarded/slow", how)

    end = events.wait_for(rid, "end", timeout=5.0)
    latency = end["t"] - closed_at
    print(f"{server.server.name} {how}: endpoint cancelled {latency * 1000:.2f} ms after close()")
    assert end["cancelled"] is True
    assert end["exc"] == start["cancelled_exc"]
    assert 0 <= latency < 1.0


@on_every_server
@both_hang_ups
def test_hang_up_ends_the_request_quietly_with_one_499_record(
    server: RunningServer, events: EventLog, how: HangUp
) -> None:
    rid, _, _ = hang_up_mid_request(server, events, "/guarded/slow", how)
    events.wait_for(rid, "end", timeout=5.0)

    assert poll(lambda: hang_up_records(server), timeout=3.0)
    get(server.port, "/ready")  # one more round trip: a second record would be out by now
    records = hang_up_records(server)
    assert len(records) == 1, records
    assert "GET /guarded/slow 499" in records[0]
    log = server.log()
    assert not [text for text in TROUBLE if text in log], log
    assert not SENT_SLOW_RESPONSE.search(log), log


@on_every_server
@both_hang_ups
def test_server_keeps_serving_after_a_hang_up(
    server: RunningServer, events: EventLog, how: HangUp
) -> None:
    rid, _, _ = hang_up_mid_request(server, events, "/guarded/slow", how)
    events.wait_for(rid, "end", timeout=5.0)

    response = get(server.port, "/guarded/quick?rid=next")
    assert response.status == 200
    assert response.json() == {"rid": "next", "cancelled": False}
    assert server.alive()


@on_every_server
def test_hang_up_does_not_stop_an_unguarded_endpoint(
    server: RunningServer, events: EventLog
) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/unguarded/slow?rid={rid}&seconds=1.5")
        start = events.wait_for(rid, "start")
        connection.hang_up("fin")

    # Half a second after the hang-up the work goes on; then it runs to its end.
    assert not poll(lambda: events.find(rid, "end"), timeout=0.5)
    end = events.wait_for(rid, "end", timeout=5.0)
    assert end["exc"] is None
    assert end["t"] - start["t"] >= 1.4
    assert hang_up_records(server) == []


@on_every_server
def test_background_task_outlives_the_post_response_disconnect(
    server: RunningServer, events: EventLog
) -> None:
    rid = new_request_id()
    with Connection(server.port) as connection:
        connection.send_request("GET", f"/guarded/background?rid={rid}")
        response = connection.read_response()
        # The client stays while the task runs. Every server queues http.disconnect as soon
        # as the response is complete: a watcher still listening would take it for a hang-up
        # and cancel the task, which runs inside the request's cancel scope.
        done = events.wait_for(rid, "background-done", timeout=3.0)

    assert response.status == 200
    assert response.json() == {"rid": rid}
    end = events.wait_for(rid, "end")
    assert end["cancelled"] is False
    assert events.find(rid, "background-stopped") is None
    assert done["t"] - end["t"] >= 0.15  # the task's whole 0.2 s sleep
    assert hang_up_records(server) == []


@on_every_server
def test_keep_alive_connection_serves_guarded_requests_one_after_another(
    server: RunningServer, events: EventLog
) -> None:
    rids = [new_request_id() for _ in range(3)]
    with Connection(server.port) as connection:
        responses = []
        for rid in rids:
            connection.send_request("GET", f"/guarded/quick?rid={rid}")
            responses.append(connection.read_response())

    assert [r.status for r in responses] == [200, 200, 200]
    assert [r.json() for r in responses] == [{"rid": rid, "cancelled": False} for rid in rids]
    assert hang_up_records(server) == []


def _uneven_pieces(data: bytes) -> Iterator[bytes]:
    """``data`` cut at uneven sizes, from one byte to a MiB, so chunk boundaries vary."""
    sizes = [1, 17, 4096, 65536, 65537, 300_000, MiB - 3]
    offset = 0
    for index in range(len(data)):  # bounded: each piece has at least one byte
        if offset >= len(data):
            break
        size = sizes[index % len(sizes)]
        yield data[offset : offset + size]
        offset += size


@on_every_server
@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_upload_arrives_whole_through_the_guarded_endpoint(
    server: RunningServer, events: EventLog, chunked: bool
) -> None:
    data = random.Random(20).randbytes(8 * MiB)
    rid = new_request_id()
    headers = {} if chunked else {"Content-Length": str(len(data))}
    with Connection(server.port) as connection:
        connection.send_request(
            "POST",
            f"/guarded/upload?rid={rid}",
            headers=headers,
            body=_uneven_pieces(data),
            chunked=chunked,
        )
        response = connection.read_response()

    assert response.status == 200
    result = response.json()
    assert result["size"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert events.wait_for(rid, "end")["cancelled"] is False


@on_every_server
def test_large_upload_keeps_server_memory_flat(server: RunningServer, events: EventLog) -> None:
    blocks = 200
    with Connection(server.port) as connection:
        # A first upload warms the server up and says which process runs the app.
        connection.send_request("POST", "/guarded/upload?rid=warm-up", body=bytes(8 * MiB))
        worker = psutil.Process(connection.read_response().json()["pid"])
        baseline = worker.memory_info().rss
        samples: list[int] = []
        digest = hashlib.sha256()

        def blocks_sampling_memory() -> Iterator[bytes]:
            base = random.Random(200).randbytes(MiB)
            for index in range(blocks):
                samples.append(worker.memory_info().rss)
                block = index.to_bytes(8, "big") + base[8:]
                digest.update(block)
                yield block

        rid = new_request_id()
        connection.send_request(
            "POST",
            f"/guarded/upload?rid={rid}",
            headers={"Content-Length": str(blocks * MiB)},
            body=blocks_sampling_memory(),
        )
        response = connection.read_response()
        samples.append(worker.memory_info().rss)

    growth = max(samples) - baseline
    print(f"{server.server.name}: RSS grew by at most {growth / MiB:.1f} MiB over {blocks} MiB")
    assert response.json()["size"] == blocks * MiB
    assert response.json()["sha256"] == digest.hexdigest()
    assert len(samples) == blocks + 1
    in_mib = [sample // MiB for sample in samples]
    assert growth < 50 * MiB, f"RSS in MiB: {baseline // MiB} before, then {in_mib}"
