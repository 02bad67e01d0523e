"""Hang up on your own app in tests: in-process, on asyncio and trio, no server needed.

Starlette's ``TestClient`` and httpx's ``ASGITransport`` only send ``http.disconnect`` after
the response is complete, so they cannot show what your endpoint does when a client goes away
mid-request. :class:`HangUpClient` drives the ASGI app itself and hangs up when you say::

    client = HangUpClient(app)
    result = await client.get("/report", hang_up_after=0.05)
    assert result.hung_up and result.context is not None and result.context.is_cancelled
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
from starlette.types import ASGIApp, Message

from fastapi_hangup._cause import CancelCause
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._guard import OBSERVER_KEY

__all__ = ["HangUpClient", "RequestResult", "assert_cancelled", "assert_not_cancelled"]


@dataclass
class RequestResult:
    """What one request did, seen from the client's side of the ASGI connection."""

    messages: list[Message] = field(default_factory=list)
    """Every message the app sent, in order."""
    hung_up: bool = False
    """Whether the client hung up before the response was complete."""
    hung_up_at: float | None = None
    """``time.monotonic()`` when the client hung up."""
    sent_after_hang_up: list[Message] = field(default_factory=list)
    """Messages the app sent after the hang-up (a clean cancellation sends none)."""
    context: CancelOnDisconnect | None = None
    """The request's cancellation context, if a guarded route created one."""
    elapsed: float = 0.0
    """Seconds from the start of the request until the app returned."""

    @property
    def status_code(self) -> int | None:
        """The response status, or ``None`` if the app never started a response."""
        for message in self.messages:
            if message["type"] == "http.response.start":
                return int(message["status"])
        return None

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (last value wins), decoded as latin-1."""
        for message in self.messages:
            if message["type"] == "http.response.start":
                return {k.decode("latin-1"): v.decode("latin-1") for k, v in message["headers"]}
        return {}

    @property
    def body(self) -> bytes:
        """The response body the app sent (also what it sent after a hang-up)."""
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    @property
    def complete(self) -> bool:
        """Whether the app sent a complete response."""
        return any(
            m["type"] == "http.response.body" and not m.get("more_body", False)
            for m in self.messages
        )

    @property
    def cancelled(self) -> bool:
        """Whether the guarded endpoint's work was cancelled (hang-up, deadline, ...)."""
        return self.context is not None and self.context.is_cancelled

    @property
    def cause(self) -> CancelCause | None:
        """Why the work was cancelled, or ``None`` (also when no guarded route ran)."""
        return None if self.context is None else self.context.cause


def assert_cancelled(
    result: RequestResult, cause: CancelCause = CancelCause.CLIENT_DISCONNECTED
) -> None:
    """Assert that the guarded endpoint was cancelled, for ``cause``, and ended cleanly.

    Cleanly means: after a hang-up, nothing was sent to the departed client (but the empty
    499 that an ``@app.middleware("http")`` needs); after a deadline, the client got the 504.

    Raises:
        AssertionError: naming what differed.
    """
    if result.context is None:
        raise AssertionError(
            "no cancellation context was created: is the route guarded (ctx: CancelCtx, "
            "@cancellable or CancellableRoute), and did the request reach it?"
        )
    if result.cause is not cause:
        raise AssertionError(f"expected the work to be cancelled for {cause}, got {result.cause}")
    sent = result.sent_after_hang_up
    if cause is CancelCause.CLIENT_DISCONNECTED and sent and not _is_middleware_answer(sent):
        raise AssertionError(f"the app sent after the hang-up: {sent}")
    if cause is CancelCause.DEADLINE_EXCEEDED and result.status_code not in (None, 504):
        raise AssertionError(f"expected a 504 after the deadline, got {result.status_code}")


def _is_middleware_answer(messages: list[Message]) -> bool:
    # Behind @app.middleware("http") the abandoned request answers an empty 499, because
    # BaseHTTPMiddleware fails when the app sends nothing; nobody reads it.
    return (
        len(messages) == 2
        and messages[0]["type"] == "http.response.start"
        and messages[0]["status"] == 499
        and messages[1]["type"] == "http.response.body"
        and not messages[1].get("body")
        and not messages[1].get("more_body", False)
    )


def assert_not_cancelled(result: RequestResult) -> None:
    """Assert that the request's work ran to its end (or was never guarded).

    Raises:
        AssertionError: if the work was cancelled, saying why.
    """
    if result.cancelled:
        raise AssertionError(f"the work was cancelled: {result.cause}")


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
        disconnect: Literal["once", "repeat"] = "once",
        timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.disconnect = disconnect
        self.timeout = timeout

    async def get(self, url: str, **kwargs: Any) -> RequestResult:
        """Send a GET request; see :meth:`request` for the arguments."""
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> RequestResult:
        """Send a POST request; see :meth:`request` for the arguments."""
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
        result = RequestResult()
        chunks = [body] if isinstance(body, bytes) else list(body)
        hung_up = anyio.Event()
        response_done = anyio.Event()
        disconnects = 0

        def hang_up() -> None:
            if not hung_up.is_set() and not response_done.is_set():
                result.hung_up = True
                result.hung_up_at = time.monotonic()
            hung_up.set()

        async def receive() -> Message:
            nonlocal disconnects
            if chunks:
                chunk = chunks.pop(0)
                return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
            if disconnects and self.disconnect == "once":
                await anyio.sleep(math.inf)  # hypercorn and daphne: nothing ever comes again
            await hung_up.wait()
            disconnects += 1
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            if result.hung_up:
                result.sent_after_hang_up.append(message)
            result.messages.append(message)
            if message["type"] == "http.response.body":
                if not message.get("more_body", False):
                    response_done.set()
                    hung_up.set()  # every server reports the end of the stream this way
                sent = sum(m["type"] == "http.response.body" for m in result.messages)
                if hang_up_after_body_chunks is not None and sent >= hang_up_after_body_chunks:
                    hang_up()

        scope = _http_scope(method, url, headers or {})
        started = time.monotonic()
        error: Exception | None = None
        async with anyio.create_task_group() as tg:

            def observe(ctx: CancelOnDisconnect) -> None:
                result.context = ctx
                if hang_up_after_start is not None:
                    tg.start_soon(_call_later, hang_up_after_start, hang_up)

            scope[OBSERVER_KEY] = observe
            if hang_up_after is not None:
                tg.start_soon(_call_later, hang_up_after, hang_up)
            if hang_up_on is not None:
                tg.start_soon(_call_on, hang_up_on, hang_up)
            try:
                await self._call_app(scope, receive, send)
            except Exception as exc:  # raised below, not wrapped in the task group's group
                error = exc
            tg.cancel_scope.cancel()
        result.elapsed = time.monotonic() - started
        if error is not None:
            raise error
        return result

    async def _call_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        with anyio.fail_after(self.timeout) as limit:
            try:
                await self.app(scope, receive, send)
            except anyio.get_cancelled_exc_class() as exc:
                if limit.cancel_called:
                    raise
                raise AssertionError(
                    "a cancellation exception escaped the ASGI app; servers log it as an "
                    "error (uvicorn, granian) or die of it (hypercorn's trio worker)"
                ) from exc


async def _call_later(delay: float, callback: Any) -> None:
    await anyio.sleep(delay)
    callback()


async def _call_on(event: anyio.Event, callback: Any) -> None:
    await event.wait()
    callback()


def _http_scope(method: str, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": parts.path or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        + [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
