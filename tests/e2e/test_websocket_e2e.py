"""Guarded websocket sessions on real servers: a close, a drop or a silent client stops the work.

Each server runs ``tests.e2e.websocket_app:app`` (see there) with a short ping interval and
timeout where its command line has them (``_servers.WEBSOCKET_SERVERS``). The client is the
``websockets`` library's sync client, or a raw socket that falls silent. Every test prints its
figures (``-rP`` shows them): the close-to-cancel latency, from the client's close (its
``time.monotonic()``, the clock the server's events use too) to the generation's cancellation,
and the lossless check's message counts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection

from ._events import EventLog, new_request_id
from ._logs import settled_log, trouble_in
from ._nginx import NGINX, ProxySettings, RunningProxy, run_nginx
from ._params import on_servers, serving
from ._servers import (
    UVICORN_WEBSOCKETS,
    UVICORN_WEBSOCKETS_SANSIO,
    WEBSOCKET_SERVERS,
    ServerView,
)
from ._wsclient import drop, open_session, silent_session

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.websocket_app:app")

STOP_RECORD = "WEBSOCKET /ws closed by the client"
LOSSLESS_COUNT = 100
NO_PING_TIMEOUT = {
    WEBSOCKET_SERVERS[2]: "hypercorn pings but has no ping timeout: a silent client stays",
    WEBSOCKET_SERVERS[3]: "hypercorn pings but has no ping timeout: a silent client stays",
    WEBSOCKET_SERVERS[4]: "granian has no websocket ping: a silent client stays",
}


#: hypercorn reports 1006 for every close by the client (its code is not passed on), and 1000
#: only after the app's own close (``hypercorn/protocol/ws_stream.py``, ``StreamClosed``).
LOSES_THE_CLIENTS_CODE = {WEBSOCKET_SERVERS[2], WEBSOCKET_SERVERS[3]}


def client_code(server: ServerView, code: int) -> int:
    """The close code the app sees when the client closes with ``code``."""
    return 1006 if server.server in LOSES_THE_CLIENTS_CODE else code


@contextlib.contextmanager
def generation(port: int, rid: str, events: EventLog) -> Iterator[ClientConnection]:
    """A session that asked for a generation, once its first token arrived."""
    with open_session(port, rid) as connection:
        connection.send("generate")
        assert connection.recv(timeout=5) == "token-0"
        events.wait_for(rid, "start")
        yield connection


def assert_generation_stopped(
    server: ServerView, events: EventLog, rid: str, closed_at: float, case: str
) -> int:
    """The generation was cancelled, the session ended quietly, one record; returns the code."""
    after = events.wait_for(rid, "after", timeout=10)
    assert after["cancelled"] is True  # the work block ended quietly, the session went on
    stopped = events.wait_for(rid, "stopped")
    # Stopped by the cancellation, or by a send that failed first (the server knew already).
    how = "cancelled" if events.find(rid, "cancelled") else "a send failed"
    events.wait_for(rid, "disconnect")  # and its next receive saw the close, as Starlette's
    assert stopped["method"] == "WEBSOCKET"
    assert stopped["cause"] == "client_disconnected"
    log = settled_log(server)
    assert trouble_in(log) == []
    assert "Unexpected ASGI message" not in log
    assert sum(STOP_RECORD in line for line in log.splitlines()) == 1
    latency_ms = (after["t"] - closed_at) * 1000
    print(
        f"[ws-figures] {server.server.name} {case}: close-to-cancel {latency_ms:.2f} ms "
        f"({how}), close code {stopped['close_code']}"
    )
    assert latency_ms < 5000  # generous: the promise is milliseconds, the bound is behaviour
    return int(stopped["close_code"])


@on_servers(WEBSOCKET_SERVERS)
def test_a_clean_close_stops_the_generation(server: ServerView, events: EventLog) -> None:
    rid = new_request_id()
    with generation(server.port, rid, events) as connection:
        closed_at = time.monotonic()
        connection.close(code=1001)

    code = assert_generation_stopped(server, events, rid, closed_at, "clean close")

    assert code == client_code(server, 1001)


@on_servers(WEBSOCKET_SERVERS)
def test_a_dropped_connection_stops_the_generation(server: ServerView, events: EventLog) -> None:
    rid = new_request_id()
    with generation(server.port, rid, events) as connection:
        closed_at = time.monotonic()
        drop(connection)

    code = assert_generation_stopped(server, events, rid, closed_at, "dropped")

    assert code in (1005, 1006)  # no close frame: 1006 by RFC 6455 (1005 on some servers)


@on_servers(
    WEBSOCKET_SERVERS,
    xfail=NO_PING_TIMEOUT,
)
def test_a_client_silent_past_the_ping_timeout_stops_the_generation(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    sock = silent_session(server.port, rid, "generate")
    try:
        silent_at = time.monotonic()
        events.wait_for(rid, "start")
        # uvicorn: ping interval + ping timeout, then the websockets library's 10 s close
        # timeout (no command-line option) before it gives up on the close handshake.
        stopped = events.wait_for(rid, "stopped", timeout=15)
        after = events.wait_for(rid, "after")
    finally:
        sock.close()
    assert after["cancelled"] is True
    waited = after["t"] - silent_at
    print(
        f"[ws-figures] {server.server.name} silent: cancelled {waited * 1000:.0f} ms after the "
        f"client fell silent, close code {stopped['close_code']}"
    )
    assert trouble_in(settled_log(server)) == []


@on_servers(WEBSOCKET_SERVERS)
def test_messages_sent_during_the_work_arrive_once_in_order(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    sent = [f"m{i}" for i in range(LOSSLESS_COUNT)]
    with open_session(server.port, rid) as connection:
        connection.send(f"hold {LOSSLESS_COUNT}")
        for text in sent:
            connection.send(text)
        answer = connection.recv(timeout=10)
        held = events.wait_for(rid, "held")
    got = str(answer).split(" ")
    print(
        f"[ws-figures] {server.server.name} lossless: sent {len(sent)}, the endpoint "
        f"received {held['count']}, in order: {got == sent}"
    )
    assert got == sent
    events.wait_for(rid, "disconnect")
    assert events.find(rid, "stopped") is None  # the close after the work is no hang-up


@on_servers(WEBSOCKET_SERVERS)
def test_a_close_while_the_endpoint_waits_is_the_normal_end(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()
    with open_session(server.port, rid) as connection:
        connection.send("hello")
        assert connection.recv(timeout=5) == "hello"
        connection.send("again")
        assert connection.recv(timeout=5) == "again"
    disconnect = events.wait_for(rid, "disconnect")
    assert disconnect["code"] == client_code(server, 1000)
    time.sleep(0.1)
    assert events.find(rid, "stopped") is None
    log = settled_log(server)
    assert STOP_RECORD not in log
    assert trouble_in(log) == []


# nginx in front, with the upgrade configuration of examples/nginx.conf.

behind_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not on PATH (Debian: apt-get install nginx-light)"
)


@pytest.fixture
def proxy(server: ServerView, tmp_path: Path) -> Iterator[RunningProxy]:
    with run_nginx(tmp_path / "nginx", server.port, ProxySettings()) as running:
        yield running


@behind_nginx
@on_servers([UVICORN_WEBSOCKETS])
@pytest.mark.parametrize("how", ["clean close", "dropped"])
def test_behind_nginx_a_close_stops_the_generation(
    server: ServerView, events: EventLog, proxy: RunningProxy, how: str
) -> None:
    rid = new_request_id()
    with generation(proxy.port, rid, events) as connection:
        closed_at = time.monotonic()
        if how == "clean close":
            connection.close(code=1001)
        else:
            drop(connection)

    code = assert_generation_stopped(server, events, rid, closed_at, f"behind nginx, {how}")

    # nginx relays the close frame; a dropped client makes nginx drop its upstream connection.
    assert code == (1001 if how == "clean close" else 1006)


@behind_nginx
@on_servers([UVICORN_WEBSOCKETS])
def test_behind_nginx_messages_arrive_once_in_order(
    server: ServerView, events: EventLog, proxy: RunningProxy
) -> None:
    rid = new_request_id()
    sent = [f"m{i}" for i in range(LOSSLESS_COUNT)]
    with open_session(proxy.port, rid) as connection:
        connection.send(f"hold {LOSSLESS_COUNT}")
        for text in sent:
            connection.send(text)
        got = str(connection.recv(timeout=10)).split(" ")
    print(f"[ws-figures] nginx → {server.server.name} lossless: {len(got)} of {len(sent)}")
    assert got == sent


@behind_nginx
@on_servers([UVICORN_WEBSOCKETS_SANSIO])
def test_behind_nginx_a_silent_client_is_stopped_by_the_servers_pings(
    server: ServerView, events: EventLog, proxy: RunningProxy
) -> None:
    rid = new_request_id()
    sock = silent_session(proxy.port, rid, "generate")
    try:
        silent_at = time.monotonic()
        events.wait_for(rid, "start")
        stopped = events.wait_for(rid, "stopped", timeout=15)  # nginx relays the pings
        after = events.wait_for(rid, "after")
    finally:
        sock.close()
    assert after["cancelled"] is True
    print(
        f"[ws-figures] nginx → {server.server.name} silent: stopped "
        f"{(after['t'] - silent_at) * 1000:.0f} ms after the client fell silent, "
        f"close code {stopped['close_code']}"
    )
    assert trouble_in(settled_log(server)) == []
