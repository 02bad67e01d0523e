"""Running work inside a request's context: at function level and at route (ASGI) level."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
from fastapi import Request, Response
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_hangup._context import SCOPE_KEY, CancelOnDisconnect
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._options import DEFAULTS, CancelOptions

T = TypeVar("T")


def open_context(request: Request, options: CancelOptions = DEFAULTS) -> CancelOnDisconnect:
    """Create and start the request's context, with every reader going through its arbiter."""
    scope = request.scope
    if scope["type"] != "http":
        raise TypeError(
            "fastapi-hangup only works on HTTP routes, but it was used on a websocket route. "
            "A websocket endpoint learns that its client left from WebSocketDisconnect, "
            "raised by websocket.receive_*(); remove cancel_ctx / @cancellable there."
        )
    ctx = CancelOnDisconnect(scope, request._receive, options)
    # Every reader of this request (request.body(), .stream(), .form(), is_disconnected())
    # goes through the arbiter from now on, so the watcher can never steal a body message.
    request._receive = ctx.receive
    _install_quiet_handler(scope)
    ctx.start()
    return ctx


async def call_guarded(
    request: Request, call: Callable[[], Awaitable[T]], options: CancelOptions = DEFAULTS
) -> T:
    """Await ``call()`` inside the request's context (``@cancellable`` on a plain route).

    If an entry point further out (the route class, the dependency) already guards the
    request, ``call()`` simply runs inside that one.
    """
    if SCOPE_KEY in request.scope:
        return await call()
    ctx = open_context(request, options)
    try:
        result = await call()
    except BaseException as exc:
        cause = await ctx.close(exc)
        if cause is None:
            raise
        raise ctx.ending_error(cause) from None
    cause = await ctx.close(None)
    if cause is not None:
        # The client left, but the endpoint finished without another await: there is
        # nobody to send the response to, and sending can block (hypercorn over HTTP/2).
        raise ctx.ending_error(cause)
    return result


def guard_route(
    app: ASGIApp, methods: frozenset[str], options: CancelOptions = DEFAULTS
) -> ASGIApp:
    """Wrap a route's ASGI app so the whole request runs inside its context.

    The route sees the raw ``receive`` and ``send``: the context covers dependencies, the
    endpoint and a streaming response body, and knows exactly when the response is complete
    (a later ``http.disconnect`` is the end of the stream, not a hang-up).
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in methods or SCOPE_KEY in scope:
            await app(scope, receive, send)
            return
        ctx = CancelOnDisconnect(scope, receive, options, covers_response=True)
        started = False
        unsent: int | None = None  # body bytes still due, when the response declares them

        async def send_while_listened(message: Message) -> None:
            nonlocal started, unsent
            if ctx.hung_up:
                return  # nobody reads it, and a send to a closed HTTP/2 stream can block
            if message["type"] == "http.response.start":
                started = True
                unsent = _content_length(message)
            elif _completes_response(message):
                ctx.end_work()
            elif unsent is not None and message["type"] == "http.response.body":
                # A client that has every byte may close before the final empty message
                # (FileResponse sends one): that is the end of the stream, not a hang-up.
                unsent -= len(message.get("body", b""))
                if unsent <= 0:
                    ctx.end_work()
            await send(message)

        ctx.start()
        try:
            await app(scope, ctx.receive, send_while_listened)
        except BaseException as exc:
            cause = await ctx.close(exc)
            if cause is None:
                raise
        else:
            cause = await ctx.close(None)
        if cause is not None:
            error = ctx.ending_error(cause)
            if isinstance(error, DeadlineExceeded) and not started:
                raise error  # the client still waits: the app's handler answers 504
            if not started and behind_base_http_middleware(scope):
                await ClientClosedResponse()(scope, receive, send)

    return guarded


def _content_length(start: Message) -> int | None:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _completes_response(message: Message) -> bool:
    kind = message["type"]
    if kind == "http.response.body":
        return not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return kind in ("http.response.pathsend", "http.response.zerocopysend")


def _install_quiet_handler(scope: Scope) -> None:
    # Starlette looks handlers up in the app's own dict, captured before dependencies run,
    # so the handler has to be in that dict; setdefault keeps one the user registered.
    handlers = scope.get("starlette.exception_handlers")
    if handlers is not None:
        handlers[0].setdefault(ClientDisconnected, _send_nothing)


async def _send_nothing(request: Request, exc: Exception) -> Response | None:
    """The client is gone, so the response is nothing; the log record was already written."""
    return ClientClosedResponse() if behind_base_http_middleware(request.scope) else None


def behind_base_http_middleware(scope: Scope) -> bool:
    """Whether an ``@app.middleware("http")`` (a ``BaseHTTPMiddleware``) wraps the app.

    Its ``call_next`` raises "No response returned." when the app sends nothing, so behind
    one the abandoned request gets a 499 response nobody reads.
    """
    middleware = getattr(scope.get("app"), "user_middleware", ())
    return any(
        isinstance(m.cls, type) and issubclass(m.cls, BaseHTTPMiddleware) for m in middleware
    )


class ClientClosedResponse(Response):
    """An empty 499 response whose sending gives up after a second.

    After a hang-up a send can block for ever (hypercorn over HTTP/2 on a closed connection),
    so it is bounded; and it is only sent where something waits for it.
    """

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(1.0):
            await super().__call__(scope, receive, send)
