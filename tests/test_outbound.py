"""``forward_deadline``: the budget travels with outbound httpx requests; a hang-up closes them.

The guarded apps run in memory (``HangUpClient``); the service they call is a real HTTP/1.1
server on a loopback socket in the test's own event loop (``serve_downstream``), so httpx
uses its real connection pool, and the downstream side sees when a connection closes.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.abc
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup import (
    DEFAULT_DEADLINE_HEADER,
    CancelCause,
    CancelCtx,
    CancelOnDisconnect,
    ForwardDeadline,
    add_cancellation,
    cancellable,
    forward_deadline,
)
from fastapi_hangup.testing import HangUpClient, assert_cancelled
from tests._context_apps import EntryPoint
from tests._helpers import LOOPBACK

pytestmark = pytest.mark.anyio

ENVOY = DEFAULT_DEADLINE_HEADER
Mode = Literal["answer", "trickle", "silent"]
_MAX_READS = 1000  # of one request head


# -- A downstream service on loopback ------------------------------------------------------
@dataclass
class Seen:
    """One request the downstream got: its headers, and whether its connection closed."""

    headers: dict[str, str]
    closed: anyio.Event = field(default_factory=anyio.Event)


@dataclass
class Downstream:
    """A tiny HTTP/1.1 server: ``answer`` at once, ``trickle`` a chunked body, or stay
    ``silent``; it notes every request and when the client closed the connection."""

    mode: Mode
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    streaming: anyio.Event = field(default_factory=anyio.Event)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            try:
                while (seen := await self._read_head(stream)) is not None:
                    self.seen.append(seen)
                    await self._respond(stream, seen)
                    if self.mode != "answer":
                        break
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass
        for seen in self.seen:
            seen.closed.set()

    async def _read_head(self, stream: anyio.abc.SocketStream) -> Seen | None:
        head = b""
        for _ in range(_MAX_READS):
            if b"\r\n\r\n" in head:
                break
            try:
                head += await stream.receive()
            except anyio.EndOfStream:
                return None
        lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
        headers = dict(line.split(": ", 1) for line in lines)
        return Seen({name.lower(): value for name, value in headers.items()})

    async def _respond(self, stream: anyio.abc.SocketStream, seen: Seen) -> None:
        if self.mode == "answer":
            await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        if self.mode == "trickle":
            await stream.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        async with anyio.create_task_group() as group:

            async def trickle() -> None:
                with anyio.move_on_after(30):
                    while self.mode == "trickle":
                        with contextlib.suppress(anyio.BrokenResourceError, OSError):
                            await stream.send(b"400\r\n" + b"x" * 1024 + b"\r\n")
                        self.streaming.set()
                        await anyio.sleep(0.02)

            group.start_soon(trickle)
            with (
                anyio.move_on_after(30),
                contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError),
            ):
                while await stream.receive():  # until the client closes: EndOfStream
                    pass
            group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def serve_downstream(mode: Mode) -> AsyncIterator[Downstream]:
    downstream = Downstream(mode)
    async with (
        await anyio.create_tcp_listener(local_host=LOOPBACK) as listener,
        anyio.create_task_group() as group,
    ):
        downstream.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        group.start_soon(listener.serve, downstream.handle)
        yield downstream
        group.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def downstream_client(
    mode: Mode = "answer", timeouts: list[dict[str, Any]] | None = None, **kwargs: Any
) -> AsyncIterator[tuple[Downstream, httpx.AsyncClient, httpx.AsyncHTTPTransport]]:
    """A downstream in ``mode``, and an open httpx client with ``forward_deadline`` that
    calls it, on a transport the test can look into; ``timeouts`` gets each request's
    timeouts as the hook left them."""

    async def note_timeouts(request: httpx.Request) -> None:  # runs after forward_deadline
        if timeouts is not None:
            timeouts.append(dict(request.extensions["timeout"]))

    async with serve_downstream(mode) as downstream:
        transport = httpx.AsyncHTTPTransport()
        async with httpx.AsyncClient(
            transport=transport,
            base_url=downstream.url,
            event_hooks={"request": [forward_deadline, note_timeouts]},
            **kwargs,
        ) as client:
            yield downstream, client, transport


def hop_app(client: httpx.AsyncClient, app: FastAPI | None = None, **options: Any) -> FastAPI:
    """``app`` (or a new one) whose ``GET /hop`` calls the downstream once and returns its
    body; with ``options``, that endpoint is ``@cancellable(**options)``."""
    if app is None:
        app = FastAPI()

    async def hop() -> str:
        return (await client.get("/")).text

    app.get("/hop")(cancellable(**options)(hop) if options else hop)
    return app


def half_used(transport: httpx.AsyncHTTPTransport) -> list[Any]:
    """The pool's connections that are neither idle (reusable) nor closed.

    httpx has no public view of its pool: ``_pool`` is the httpcore pool behind the transport.
    """
    return [c for c in transport._pool.connections if not c.is_idle() and not c.is_closed()]


def sent_budget(seen: Seen) -> int:
    return int(seen.headers[ENVOY])


# -- The budget travels --------------------------------------------------------------------
async def test_an_outbound_request_carries_the_remaining_budget(entry: EntryPoint) -> None:
    async with downstream_client() as (downstream, client, _):

        async def work(ctx: CancelOnDisconnect) -> object:
            await anyio.sleep(0.1)
            return (await client.get("/")).text

        result = await HangUpClient(entry.app(work, deadline=2.0)).get("/work")

    assert result.status_code == 200, result.body
    (seen,) = downstream.seen
    print(f"{entry}: {sent_budget(seen)} ms of a 2000 ms budget sent after 100 ms")
    assert 1000 < sent_budget(seen) <= 1900


async def test_a_callers_deadline_header_travels_on_shortened() -> None:
    app = FastAPI()
    add_cancellation(app, deadline_header=True)  # the whole opt-in of a service in a chain
    async with downstream_client() as (downstream, client, _):

        @app.get("/hop")
        async def hop() -> str:
            await anyio.sleep(0.05)
            return (await client.get("/")).text

        result = await HangUpClient(app).get("/hop", headers={ENVOY: "700"})

    assert result.status_code == 200, result.body
    (seen,) = downstream.seen
    assert 300 < sent_budget(seen) <= 650


async def test_the_timeouts_are_lowered_to_the_budget() -> None:
    timeouts: list[dict[str, Any]] = []
    slow_read = httpx.Timeout(30.0, connect=0.25)
    async with downstream_client("answer", timeouts, timeout=slow_read) as (_, client, _):
        await HangUpClient(hop_app(client, deadline=1.0)).get("/hop")

    ((sent,),) = [timeouts]
    assert sent["connect"] == 0.25  # shorter than the budget already: kept
    for name in ("read", "write", "pool"):
        assert 0.5 < sent[name] <= 1.0, (name, sent)


async def test_without_a_deadline_nothing_is_changed() -> None:
    timeouts: list[dict[str, Any]] = []
    async with downstream_client("answer", timeouts, timeout=7.0) as (downstream, client, _):
        await client.get("/")

    assert ENVOY not in downstream.seen[0].headers
    assert timeouts == [dict.fromkeys(("connect", "read", "write", "pool"), 7.0)]


async def test_a_route_without_a_budget_forwards_the_deadline_around_it() -> None:
    """Whoever set the deadline that ends first: here the test client's own 3 s limit."""
    app = FastAPI()
    add_cancellation(app)  # no budget, and the caller's header is not honoured
    async with downstream_client() as (downstream, client, _):
        hop_app(client, app)
        await HangUpClient(app, timeout=3.0).get("/hop", headers={ENVOY: "500"})

    assert 2500 < sent_budget(downstream.seen[0]) <= 3000


async def test_a_timeout_around_the_call_narrows_the_budget() -> None:
    app = FastAPI()
    add_cancellation(app, deadline=5.0)
    async with downstream_client() as (downstream, client, _):

        @app.get("/hop")
        async def hop() -> str:
            with anyio.fail_after(0.4):  # the deadline that ends first is the one sent
                return (await client.get("/")).text

        await HangUpClient(app).get("/hop")

    assert 200 < sent_budget(downstream.seen[0]) <= 400


async def test_a_shielded_call_carries_no_budget() -> None:
    app = FastAPI()
    async with downstream_client() as (downstream, client, _):

        @app.get("/hop")
        @cancellable(deadline=5.0)
        async def hop(ctx: CancelCtx) -> str:
            with ctx.shield():  # runs to its end after the budget: nothing to tell downstream
                response = await client.get("/")
            return response.text

        await HangUpClient(app).get("/hop")

    assert ENVOY not in downstream.seen[0].headers


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio cancels every await there
async def test_cleanup_after_the_budget_sends_its_request_unchanged() -> None:
    timeouts: list[dict[str, Any]] = []
    app = FastAPI()
    async with downstream_client("answer", timeouts, timeout=7.0) as (downstream, client, _):

        @app.get("/hop")
        @cancellable(deadline=0.1)
        async def hop() -> None:
            try:
                await anyio.sleep(5)
            finally:  # asyncio delivers the cancellation once: this call can run
                await client.get("/")

        result = await HangUpClient(app).get("/hop")

    assert result.status_code == 504
    assert ENVOY not in downstream.seen[0].headers
    assert timeouts == [dict.fromkeys(("connect", "read", "write", "pool"), 7.0)]


@pytest.mark.parametrize(("preset", "expected"), [("250", 250), ("99999", None), ("x", None)])
async def test_a_header_set_by_the_caller_is_kept_only_if_shorter(
    preset: str, expected: int | None
) -> None:
    app = FastAPI()
    async with downstream_client() as (downstream, client, _):

        @app.get("/hop")
        @cancellable(deadline=1.0)
        async def hop() -> str:
            return (await client.get("/", headers={ENVOY: preset})).text

        await HangUpClient(app).get("/hop")

    sent = sent_budget(downstream.seen[0])
    if expected is None:
        assert 500 < sent <= 1000
    else:
        assert sent == expected


async def test_a_header_name_of_your_own() -> None:
    async with serve_downstream("answer") as downstream:
        hook = ForwardDeadline("X-Timeout-Ms")
        async with httpx.AsyncClient(base_url=downstream.url, event_hooks={"request": [hook]}) as c:
            await HangUpClient(hop_app(c, deadline=1.0)).get("/hop")

    (seen,) = downstream.seen
    assert ENVOY not in seen.headers
    assert 500 < int(seen.headers["x-timeout-ms"]) <= 1000


async def test_a_downstream_service_shares_the_callers_budget() -> None:
    """Service B, in memory behind A, honours A's budget with its one-line opt-in."""
    budgets: list[tuple[float | None, float]] = []
    b = FastAPI()
    add_cancellation(b, deadline_header=True)

    @b.get("/b")
    async def b_work(ctx: CancelCtx) -> str:
        budgets.append((ctx.deadline, ctx.remaining()))
        return "b"

    a = FastAPI()
    add_cancellation(a, deadline=1.5)
    transport = httpx.ASGITransport(app=b)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://b", event_hooks={"request": [forward_deadline]}
    ) as to_b:

        @a.get("/a")
        async def a_work(ctx: CancelCtx) -> dict[str, Any]:
            await anyio.sleep(0.1)
            response = await to_b.get("/b")
            return {"b": response.text, "a_deadline": ctx.deadline}

        result = await HangUpClient(a).get("/a")

    assert result.status_code == 200, result.body
    ((b_deadline, b_remaining),) = budgets
    assert b_deadline is not None
    a_deadline = result.context.deadline if result.context else None
    assert a_deadline is not None
    # One budget: B's ends with A's. Within 2 ms: uvloop's clock counts whole milliseconds
    # and is read once per loop iteration, and the hop itself takes a little time.
    assert b_deadline <= a_deadline + 0.002, (b_deadline - a_deadline) * 1000
    assert 1.0 < b_remaining <= 1.4


# -- A hang-up or the budget's end abandons the call ---------------------------------------
async def test_a_hang_up_closes_the_downstream_connection_and_the_pool_holds_none() -> None:
    app = FastAPI()
    add_cancellation(app)
    received: list[int] = []
    async with downstream_client("trickle") as (downstream, client, transport):

        @app.get("/relay")
        async def relay() -> int:
            async with client.stream("GET", "/") as response:
                async for chunk in response.aiter_raw():
                    received.append(len(chunk))
            return sum(received)

        go = anyio.Event()
        async with anyio.create_task_group() as group:

            async def hang_up_once_streaming() -> None:
                await downstream.streaming.wait()
                await anyio.sleep(0.1)
                go.set()

            group.start_soon(hang_up_once_streaming)
            result = await HangUpClient(app).get("/relay", hang_up_on=go)
        assert_cancelled(result, cause=CancelCause.CLIENT_DISCONNECTED)
        with anyio.fail_after(3):
            await downstream.seen[0].closed.wait()  # the downstream saw its client go
        assert received, "the relay never got a chunk: nothing was half-read"
        assert half_used(transport) == []
        assert all(c.is_closed() for c in transport._pool.connections)


async def test_the_budgets_end_closes_the_downstream_connection_and_answers_504() -> None:
    app = FastAPI()
    async with downstream_client("trickle") as (downstream, client, transport):

        @app.get("/relay")
        @cancellable(deadline=0.3)
        async def relay() -> int:
            size = 0
            async with client.stream("GET", "/") as response:
                async for chunk in response.aiter_raw():
                    size += len(chunk)
            return size

        result = await HangUpClient(app).get("/relay")
        assert result.status_code == 504, result.body
        with anyio.fail_after(3):
            await downstream.seen[0].closed.wait()
        assert half_used(transport) == []


async def test_a_silent_downstream_ends_in_the_504_not_in_a_timeout_error() -> None:
    """The read timeout the hook sets ends with the budget: the budget's 504 wins the race."""
    async with downstream_client("silent", timeout=None) as (_, client, transport):
        app = hop_app(client, deadline=0.1)
        statuses = [(await HangUpClient(app).get("/hop")).status_code for _ in range(5)]
        assert half_used(transport) == []
    assert statuses == [504] * 5


async def test_a_completed_call_leaves_its_connection_idle_for_the_next() -> None:
    """The contrast to the hang-up: the pool check sees a connection that is kept."""
    app = FastAPI()
    add_cancellation(app, deadline=2.0)
    async with downstream_client() as (_, client, transport):
        assert (await HangUpClient(hop_app(client, app)).get("/hop")).status_code == 200
        (connection,) = transport._pool.connections
        assert connection.is_idle()


# -- Misuse ----------------------------------------------------------------------------------
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the check is on the caller's thread
async def test_a_sync_client_is_told_what_to_do_instead() -> None:
    errors: list[BaseException] = []

    def in_a_worker_thread() -> None:
        with httpx.Client(
            transport=httpx.MockTransport(lambda request: httpx.Response(200)),
            event_hooks={"request": [forward_deadline]},
        ) as client:
            try:
                client.get("http://downstream/")
            except RuntimeError as exc:
                errors.append(exc)

    thread = threading.Thread(target=in_a_worker_thread)
    thread.start()
    thread.join(10)
    (error,) = errors
    assert "httpx.AsyncClient" in str(error)
    assert "timeout=ctx.remaining()" in str(error)


@pytest.mark.parametrize("header", ["bad header", "", "x-ms:"])
def test_a_bad_header_name_fails_at_once(header: str) -> None:
    with pytest.raises(ValueError, match="not a valid HTTP header name"):
        ForwardDeadline(header)


def test_the_hook_says_what_it_sends() -> None:
    assert repr(forward_deadline) == f"ForwardDeadline(header={ENVOY!r})"


def test_importing_the_package_does_not_import_httpx() -> None:
    code = "import sys, fastapi_hangup; print('httpx' in sys.modules)"
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert output.stdout.strip() == "False"
