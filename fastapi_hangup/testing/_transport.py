"""``HangUpTransport``: an httpx transport whose client can hang up, as real clients do.

httpx's own ``ASGITransport`` runs the app inside ``handle_async_request`` and says
``http.disconnect`` only after the response, so a client that gives up takes the app down
with it, mid-``await``, and the app never learns that anyone left. This transport runs each
request's app in a task group it owns for the client's lifetime. When the caller abandons
the request (a cancel scope or timeout around ``client.get()``, or leaving a
``client.stream()`` block before the body ends), the app gets ``http.disconnect`` at that
moment and keeps running until it has reacted; the abandoning call waits for that, shielded
and bounded, so the test can look at the outcome right away in ``transport.last_request``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup
from starlette.types import ASGIApp

from fastapi_hangup.testing._exchange import Disconnect, Exchange
from fastapi_hangup.testing._lifespan import Lifespan
from fastapi_hangup.testing._result import RequestResult

_NOT_ENTERED = (
    "HangUpTransport runs the app in a task group that it opens when the client is entered: "
    "use `async with httpx.AsyncClient(transport=HangUpTransport(app)) as client:` "
    "(or the `hangup_client` pytest fixture)."
)
_NO_RESPONSE = "the app returned without sending a response ({} {})"


class HangUpTransport(httpx.AsyncBaseTransport):
    """Sends an ``httpx.AsyncClient``'s requests to an ASGI app, in-process, hang-ups included.

    Use it as httpx's ``ASGITransport``, entered with its client::

        transport = HangUpTransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            with anyio.move_on_after(0.1):
                await client.get("/report")  # gives up after 0.1 s: the app sees a hang-up
        assert_cancelled(transport.last_request)

    A request that is not abandoned behaves as with ``ASGITransport``: the same scope, request
    and response bodies, headers and cookies; an app exception propagates from the call
    (``raise_app_exceptions=False`` makes it a 500). Response bodies stream as the app sends
    them.

    Args:
        app: the ASGI application (your ``FastAPI()`` instance).
        disconnect: how the simulated server reports a hang-up. ``"once"`` (the default)
            delivers ``http.disconnect`` to one ``receive()`` call and blocks every later one,
            as hypercorn and daphne do; ``"repeat"`` returns it to every call, as uvicorn and
            granian do. Code that works with ``"once"`` works on every server.
        lifespan: run the app's lifespan (startup when the client is entered, shutdown when
            it is closed); its state is each request's ``request.state``.
        raise_app_exceptions: raise an exception from the app in the test (``True``), or
            answer 500 like a server (``False``).
        root_path: the ASGI ``root_path`` (the app's mount point).
        client: the ``(host, port)`` the app sees the request come from.
        hang_up_wait: how long an abandoning call waits, at most, for the app to end after
            the hang-up (seconds). Past it the call returns and the app runs on until the
            client is closed.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        disconnect: Disconnect = "once",
        lifespan: bool = True,
        raise_app_exceptions: bool = True,
        root_path: str = "",
        client: tuple[str, int] = ("127.0.0.1", 123),
        hang_up_wait: float = 5.0,
    ) -> None:
        self.app = app
        self.disconnect: Disconnect = disconnect
        self.lifespan = lifespan
        self.raise_app_exceptions = raise_app_exceptions
        self.root_path = root_path
        self.client = client
        self.hang_up_wait = hang_up_wait
        self.requests: list[RequestResult] = []
        """What each request did, in the order they were sent."""
        self.state: dict[str, Any] = {}
        """The state the app's lifespan yielded (each request gets a shallow copy)."""
        self._task_group: TaskGroup | None = None
        self._lifespan: Lifespan | None = None
        self._running: list[Exchange] = []

    @property
    def last_request(self) -> RequestResult:
        """What the latest request did.

        Raises:
            LookupError: if no request was sent yet.
        """
        if not self.requests:
            raise LookupError("no request was sent through this transport yet")
        return self.requests[-1]

    async def __aenter__(self) -> HangUpTransport:
        """Open the task group the apps run in, and run the app's lifespan startup."""
        if self._task_group is not None:
            raise RuntimeError("this HangUpTransport is already open; it serves one client")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        if self.lifespan:
            self._lifespan = Lifespan(self.app)
            self.state = self._lifespan.state
            try:
                await self._lifespan.startup(task_group)
            except BaseException:
                await self._close()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        """Hang up on requests still running, run the lifespan shutdown, close the group."""
        try:
            with anyio.CancelScope(shield=True):
                await self._end_requests()
                if self._lifespan is not None:
                    await self._lifespan.shutdown()
        finally:
            await self._close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Run the app for ``request``; return once the app started its response.

        Raises:
            RuntimeError: if the transport was not entered (``async with`` the client).
            Exception: what the app raised before starting its response.
        """
        if self._task_group is None:
            raise RuntimeError(_NOT_ENTERED)
        assert isinstance(request.stream, httpx.AsyncByteStream)
        exchange = Exchange(self._scope(request), request.stream, disconnect=self.disconnect)
        self.requests.append(exchange.result)
        self._running.append(exchange)
        self._task_group.start_soon(self._serve, exchange)
        try:
            await exchange.started.wait()
        except BaseException:  # the caller gave up before the response started
            await self._abandon(exchange)
            raise
        start = exchange.result.start_message
        if start is None:
            return self._failed(exchange, request)
        stream = _ResponseBody(self, exchange, head=request.method == "HEAD")
        return httpx.Response(start["status"], headers=start.get("headers", []), stream=stream)

    async def _serve(self, exchange: Exchange) -> None:
        try:
            await exchange.run(self.app)
        finally:
            self._running.remove(exchange)

    async def _abandon(self, exchange: Exchange) -> None:
        # The caller is being cancelled: hang up at once, then give the app the time it
        # needs to react (shielded, bounded), so the caller can look at the outcome.
        exchange.hang_up()
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.hang_up_wait):
            await exchange.finished.wait()

    def _failed(self, exchange: Exchange, request: httpx.Request) -> httpx.Response:
        if exchange.error is not None and self.raise_app_exceptions:
            raise exchange.error
        if exchange.error is None:
            raise AssertionError(_NO_RESPONSE.format(request.method, request.url))
        return httpx.Response(500, headers={})

    def _scope(self, request: httpx.Request) -> dict[str, Any]:
        # httpx's ASGITransport's scope, plus the lifespan state as servers pass it.
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for (k, v) in request.headers.raw],
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?")[0],
            "query_string": request.url.query,
            "server": (request.url.host, request.url.port),
            "client": self.client,
            "root_path": self.root_path,
            "state": dict(self.state),
        }

    async def _end_requests(self) -> None:
        # The connection closes: what still runs hears a hang-up, then is cancelled.
        for exchange in list(self._running):
            exchange.hang_up()
        with anyio.move_on_after(self.hang_up_wait):
            for exchange in list(self._running):
                await exchange.finished.wait()
        for exchange in list(self._running):
            exchange.cancel()

    async def _close(self) -> None:
        # Nothing in the group raises (each request's and the lifespan's errors are kept
        # for the test's task), so the group is left without the test's own exception:
        # handed over, trio would wrap a failing assert in an ExceptionGroup.
        task_group, self._task_group, self._lifespan = self._task_group, None, None
        assert task_group is not None
        await task_group.__aexit__(None, None, None)


class _ResponseBody(httpx.AsyncByteStream):
    """The response body as the app sends it; closing it early is a hang-up."""

    def __init__(self, transport: HangUpTransport, exchange: Exchange, *, head: bool) -> None:
        self._transport = transport
        self._exchange = exchange
        self._head = head
        self._read = 0  # how many of the app's messages were looked at

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        while True:
            messages = exchange.result.messages
            while self._read < len(messages):
                message = messages[self._read]
                self._read += 1
                if message["type"] != "http.response.body":
                    continue
                if message.get("body") and not self._head:
                    yield message["body"]
                if not message.get("more_body", False):
                    await exchange.finished.wait()  # as ASGITransport: background tasks too
                    self._raise_error()
                    return
            if exchange.finished.is_set():  # the app ended before its body did
                self._raise_error()
                return
            await exchange.changed()

    async def aclose(self) -> None:
        if not self._exchange.result.complete and not self._exchange.finished.is_set():
            await self._transport._abandon(self._exchange)

    def _raise_error(self) -> None:
        error = self._exchange.error
        if error is not None and self._transport.raise_app_exceptions:
            raise error


__all__ = ["HangUpTransport"]
