"""``HangUpClient``: hang up on your own app in one call, with triggers an httpx client lacks.

It runs each request through the same ``Exchange`` as
[`HangUpTransport`][fastapi_hangup.testing.HangUpTransport], adding hang-ups that only the server
side can time: after N response body chunks, or once the guarded work has started::

    client = HangUpClient(app)
    result = await client.get("/report", hang_up_after=0.05)
    assert result.hung_up and result.context is not None and result.context.is_cancelled
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
from starlette.types import ASGIApp

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup.testing._exchange import Disconnect, Exchange, chunks_of, http_scope
from fastapi_hangup.testing._result import RequestResult


class HangUpClient:
    """Sends requests straight to an ASGI app and hangs up mid-request when told to.

    Args:
        app: the ASGI application (your ``FastAPI()`` instance).
        disconnect: how the simulated server reports the hang-up. ``"once"`` (the default)
            delivers ``http.disconnect`` to one ``receive()`` call and blocks every later one,
            as hypercorn and daphne do; ``"repeat"`` returns it to every call, as uvicorn
            and granian do. Code that works with ``"once"`` works on every server.
        timeout: the longest one request may take, in seconds; past it the call fails.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        disconnect: Disconnect = "once",
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.disconnect = disconnect
        self.timeout = timeout

    async def get(self, url: str, **kwargs: Any) -> RequestResult:
        """Send a GET request; the arguments are those of
        [`request`][fastapi_hangup.testing.HangUpClient.request]."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> RequestResult:
        """Send a POST request; the arguments are those of
        [`request`][fastapi_hangup.testing.HangUpClient.request]."""
        return await self.request("POST", url, **kwargs)

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | Iterable[bytes] = b"",
        headers: Mapping[str, str] | None = None,
        hang_up_after: float | None = None,
        hang_up_on: anyio.Event | None = None,
        hang_up_after_body_chunks: int | None = None,
        hang_up_after_start: float | None = None,
    ) -> RequestResult:
        """Send one request and return what the app did with it.

        With none of the ``hang_up_*`` arguments the client stays until the response is
        complete (then gets ``http.disconnect``, as every server sends it). Otherwise it
        hangs up at the first of: ``hang_up_after`` seconds after the start, ``hang_up_on``
        being set (for example by the endpoint, once it has started its work), or after the
        app sent ``hang_up_after_body_chunks`` response body messages, or
        ``hang_up_after_start`` seconds after the guarded work started (its cancellation
        context was created; ``0`` hangs up before the endpoint's first ``await``).

        Args:
            method: the HTTP method.
            url: path and optional query string, e.g. ``"/items?limit=3"``.
            body: the request body, or an iterable of chunks sent as separate messages.
            headers: request headers.
            hang_up_after: seconds after the start at which to hang up.
            hang_up_on: an event that makes the client hang up when set.
            hang_up_after_body_chunks: hang up once the app sent this many body messages.
            hang_up_after_start: seconds after the guarded work started at which to hang up.

        Raises:
            AssertionError: if a cancellation exception escaped the app.
            TimeoutError: if the request took longer than the client's ``timeout``.
        """
        chunks = [body] if isinstance(body, bytes) else list(body)
        scope = http_scope(method, url, headers or {})
        exchange = Exchange(
            scope,
            chunks_of(chunks),
            disconnect=self.disconnect,
            hang_up_after_body_chunks=hang_up_after_body_chunks,
        )
        async with anyio.create_task_group() as tg:

            def started(ctx: CancelOnDisconnect) -> None:
                if hang_up_after_start is not None:
                    tg.start_soon(_call_later, hang_up_after_start, exchange.hang_up)

            exchange.on_context = started
            if hang_up_after is not None:
                tg.start_soon(_call_later, hang_up_after, exchange.hang_up)
            if hang_up_on is not None:
                tg.start_soon(_call_on, hang_up_on, exchange.hang_up)
            await exchange.run(self.app, time_limit=self.timeout)
            tg.cancel_scope.cancel()
        if exchange.error is not None:
            raise exchange.error  # as itself, not wrapped in the task group's group
        return exchange.result


async def _call_later(delay: float, callback: Callable[[], None]) -> None:
    await anyio.sleep(delay)
    callback()


async def _call_on(event: anyio.Event, callback: Callable[[], None]) -> None:
    await event.wait()
    callback()
