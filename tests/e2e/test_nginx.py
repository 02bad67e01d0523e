"""uvicorn behind nginx: which proxy settings let a hang-up reach the app, and which do not.

The client talks to nginx; nginx talks to uvicorn over HTTP/1.1 with upstream keep-alive
(the usual production configuration, see ``_nginx.py``). With nginx's defaults a client
that hangs up makes nginx close its upstream connection, which uvicorn reports to the app as
``http.disconnect``: the endpoint is cancelled as if the client were connected directly.
The tests then change one setting at a time and pin down what it does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from ._checks import (
    assert_background_task_ran_on,
    assert_cancelled_promptly,
    assert_upload_arrived,
    assert_upload_cancelled_quietly,
    assert_work_runs_to_its_end,
    hang_up_mid_request,
)
from ._client import Connection, HangUp
from ._events import EventLog, new_request_id, poll
from ._logs import hang_up_records, settled_log, trouble_in
from ._nginx import NGINX, ProxySettings, RunningProxy, run_nginx
from ._params import on_servers
from ._servers import UVICORN_HTTPTOOLS, ServerView

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not on PATH (Debian: apt-get install nginx-light)"
    ),
]

COLUMN = "nginx → uvicorn-httptools"
behind_nginx = on_servers([UVICORN_HTTPTOOLS])
MiB = 1024 * 1024

StartProxy = Callable[[ProxySettings], AbstractContextManager[RunningProxy]]


def check(label: str) -> pytest.MarkDecorator:
    """This test's row in the "nginx in front of uvicorn" table of the matrix."""
    return pytest.mark.check(label, table="nginx in front of uvicorn", column=COLUMN)


@pytest.fixture
def start_proxy(server: ServerView, tmp_path: Path) -> Iterator[StartProxy]:
    """Start nginx in front of ``server`` with the given settings (a context manager)."""

    def start(settings: ProxySettings) -> AbstractContextManager[RunningProxy]:
        return run_nginx(tmp_path / "nginx", server.port, settings)

    yield start
    error_log = tmp_path / "nginx" / "error.log"
    if error_log.exists():
        print(f"----- nginx error log -----\n{error_log.read_text()}")


@check("default settings: a hang-up at nginx cancels the endpoint, quietly")
@behind_nginx
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_hang_up_at_nginx_cancels_the_endpoint(
    server: ServerView, events: EventLog, start_proxy: StartProxy, how: HangUp
) -> None:
    with start_proxy(ProxySettings()) as proxy:
        rid, start, closed_at = hang_up_mid_request(proxy.port, events, "/guarded/slow", how)
        end = events.wait_for(rid, "end", timeout=5.0)
        assert poll(lambda: hang_up_records(server, rid), timeout=3.0)
        # nginx notes the early close; with its default it then closes the upstream too.
        assert poll(lambda: "prematurely closed" in proxy.error_log(), timeout=3.0)

    assert_cancelled_promptly(start, end, closed_at, f"behind nginx, {how}: cancelled")
    log = settled_log(server)
    assert len(hang_up_records(server, rid)) == 1, log
    assert not trouble_in(log), log


@check("proxy_ignore_client_abort on: the endpoint is NOT cancelled (runs to its end)")
@behind_nginx
def test_ignore_client_abort_keeps_the_endpoint_running(
    server: ServerView, events: EventLog, start_proxy: StartProxy
) -> None:
    with start_proxy(ProxySettings(ignore_client_abort=True)) as proxy:
        rid, start, _ = hang_up_mid_request(proxy.port, events, "/guarded/slow?seconds=1.5")
        # nginx keeps its upstream request going, so nothing tells the app that the client
        # left: the work runs its full 1.5 s and the response goes to nginx, which drops it.
        assert_work_runs_to_its_end(server, events, rid, start)

    assert events.wait_for(rid, "end")["cancelled"] is False


@check("proxy_read_timeout: when nginx gives up (504), the endpoint is cancelled")
@behind_nginx
def test_read_timeout_at_nginx_cancels_the_endpoint(
    server: ServerView, events: EventLog, start_proxy: StartProxy
) -> None:
    with start_proxy(ProxySettings(read_timeout=0.5)) as proxy:
        rid = new_request_id()
        with Connection(proxy.port) as connection:
            connection.send_request("GET", f"/guarded/slow?rid={rid}&seconds=5")
            response = connection.read_response()
        end = events.wait_for(rid, "end", timeout=5.0)
        assert poll(lambda: hang_up_records(server, rid), timeout=3.0)

    # nginx answers 504 itself and closes the upstream connection: for the app that is a
    # hang-up like any other, so the work stops instead of running on for nobody.
    assert response.status == 504
    assert end["cancelled"] is True
    assert end["t"] - events.wait_for(rid, "start")["t"] < 1.5


@check("proxy_buffering on/off: a hang-up stops a streamed response")
@behind_nginx
@pytest.mark.parametrize("buffering", [True, False], ids=["buffering-on", "buffering-off"])
def test_hang_up_at_nginx_stops_a_streamed_response(
    server: ServerView, events: EventLog, start_proxy: StartProxy, buffering: bool
) -> None:
    with start_proxy(ProxySettings(buffering=buffering)) as proxy:
        rid = new_request_id()
        with Connection(proxy.port) as connection:
            connection.send_request("GET", f"/route/stream?rid={rid}&count=200&interval=0.05")
            connection.read_until(b"tick 1\n")  # nginx passes the ticks on as they come
            closed_at = connection.hang_up("fin")
        end = events.wait_for(rid, "end", timeout=5.0)

    latency = end["t"] - closed_at
    print(f"behind nginx, buffering {buffering}: stream stopped {latency * 1000:.2f} ms after")
    assert end["cancelled"] is True
    assert end["sent"] < 150
    assert 0 <= latency < 1.0


@check("proxy_request_buffering on (default): an upload abandoned half-way never reaches the app")
@behind_nginx
def test_abandoned_upload_never_reaches_the_app_with_request_buffering(
    server: ServerView, events: EventLog, start_proxy: StartProxy
) -> None:
    with start_proxy(ProxySettings(request_buffering=True)) as proxy:
        rid = new_request_id()
        with Connection(proxy.port) as connection:
            connection.send_request(
                "POST",
                f"/guarded/upload?rid={rid}",
                headers={"Content-Length": str(64 * MiB)},
                body=[bytes(4 * MiB)],
            )
            # nginx is reading the body into its own buffer (a temp file past 16 KiB) ...
            assert poll(lambda: "buffered to a temporary file" in proxy.error_log(), timeout=3.0)
            connection.hang_up("fin")
        assert poll(lambda: "prematurely closed" in proxy.error_log(), timeout=3.0)

    # ... and contacts uvicorn only once it has all of it: this request never got there.
    assert not poll(lambda: events.of(rid), timeout=0.5)


@check("proxy_request_buffering off: a hang-up during an upload cancels the endpoint")
@on_servers([UVICORN_HTTPTOOLS])
def test_hang_up_during_an_unbuffered_upload_cancels_the_endpoint(
    server: ServerView, events: EventLog, start_proxy: StartProxy
) -> None:
    with start_proxy(ProxySettings(request_buffering=False)) as proxy:
        rid = new_request_id()
        with Connection(proxy.port) as connection:
            connection.send_request(
                "POST",
                f"/guarded/upload?rid={rid}",
                headers={"Content-Length": str(64 * MiB)},
                body=[bytes(MiB)],
            )
            start = events.wait_for(rid, "start")  # the body streams through to the app
            connection.hang_up("fin")
        end = events.wait_for(rid, "end", timeout=5.0)
        assert_upload_cancelled_quietly(server, rid, start, end)


@check("an upload arrives whole through nginx (8 MiB)")
@behind_nginx
@pytest.mark.parametrize(
    "request_buffering", [True, False], ids=["request-buffering-on", "request-buffering-off"]
)
def test_upload_arrives_whole_through_nginx(
    server: ServerView, events: EventLog, start_proxy: StartProxy, request_buffering: bool
) -> None:
    data = random.Random(30).randbytes(8 * MiB)
    rid = new_request_id()
    with (
        start_proxy(ProxySettings(request_buffering=request_buffering)) as proxy,
        Connection(proxy.port) as connection,
    ):
        connection.send_request("POST", f"/guarded/upload?rid={rid}", body=data)
        response = connection.read_response()

    assert_upload_arrived(response, data, events, rid)


@check("client left ≠ response finished: background task runs on")
@behind_nginx
def test_background_task_runs_on_behind_nginx(
    server: ServerView, events: EventLog, start_proxy: StartProxy
) -> None:
    rid = new_request_id()
    with start_proxy(ProxySettings()) as proxy:
        with Connection(proxy.port) as connection:
            connection.send_request("GET", f"/guarded/background?rid={rid}")
            response = connection.read_response()
        # The client is gone at once; nginx keeps its upstream connection for the next request.
        done = events.wait_for(rid, "background-done", timeout=3.0)

    assert response.status == 200
    assert_background_task_ran_on(server, events, rid, done)
