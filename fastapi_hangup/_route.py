"""``CancellableRoute``: make every route of a router cancellable, for the whole request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._guard import SCOPE_KEY, RequestGuard
from fastapi_hangup._openapi import mark_operation
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import SAFE_METHODS, normalize_methods, policy_of
from fastapi_hangup._quiet import answer_middleware


class CancellableRoute(APIRoute):
    """A route class whose requests stop when their client hangs up.

    Use it for a whole router: ``APIRouter(route_class=CancellableRoute)`` (or
    ``app.router.route_class = CancellableRoute`` before adding routes). Unlike the
    dependency, the route sees the raw ASGI ``receive`` and ``send``, so the guard covers the
    whole request: body parsing, every dependency, the endpoint, and a streaming response
    body (``StreamingResponse``, SSE and JSON Lines generator endpoints, file responses). It
    tells "client left" from "response finished" exactly, from what it sends.

    By default only safe methods (GET, HEAD, OPTIONS, QUERY) are cancelled: a write cancelled
    half-way can leave state half-written. Opt a route in with ``@cancellable`` (all of its
    methods) or the whole router with [`cancellable_route`][fastapi_hangup.cancellable_route]; opt a
    route out with ``@cancellable(False)``. Cancellable operations are marked in the OpenAPI
    document.
    """

    cancel_methods: ClassVar[frozenset[str]] = SAFE_METHODS
    """The methods this router cancels unless a route's ``@cancellable`` says otherwise."""
    openapi_tag: ClassVar[str | None] = None
    """A tag added to every cancellable operation, if set."""
    cancel_options: ClassVar[CancelOptions] = DEFAULTS
    """Deadline, grace period and the rest, unless a route's ``@cancellable`` sets its own."""

    def __init__(self, path: str, endpoint: Any, **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        policy = policy_of(endpoint)
        served = self.methods or set()
        options = self.cancel_options
        if policy is not None:
            self.cancelled_methods = policy.methods_for(served)
            if policy.options != DEFAULTS:
                options = policy.options
        else:
            self.cancelled_methods = frozenset(served) & self.cancel_methods
        # handle() is what runs a request, for a route of this router and for the same route
        # included into another router (FastAPI 0.165+ builds a separate app for the latter).
        self._guarded_handle = guard_route(super().handle, self.cancelled_methods, options)
        if self.cancelled_methods:
            mark_operation(self, self.cancelled_methods, tag=self.openapi_tag)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one request inside its cancellation context (if the policy says so)."""
        await self._guarded_handle(scope, receive, send)


def cancellable_route(
    *,
    methods: Iterable[str] = SAFE_METHODS,
    tag: str | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
) -> type[CancellableRoute]:
    """Return a route class with its own router-wide policy.

    The class is a [`CancellableRoute`][fastapi_hangup.CancellableRoute].

    Args:
        methods: the methods the router cancels by default. Pass ``ALL_METHODS`` to cancel
            writes too, or an empty set to cancel only routes marked ``@cancellable``.
        tag: an OpenAPI tag added to every cancellable operation.
        deadline: a time budget in seconds for every cancellable request; see
            [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        grace: seconds between noticing a hang-up and delivering the cancellation.
        deadline_header: honour an inbound deadline header; see
            [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        callback_timeout: the default time limit of ``on_cancel`` callbacks.

    Example:
        ``APIRouter(route_class=cancellable_route(methods=ALL_METHODS, tag="cancellable"))``
    """
    allowed = normalize_methods(methods, what="cancellable_route(methods=...)")
    options = CancelOptions.build(
        deadline=deadline,
        grace=grace,
        deadline_header=deadline_header,
        callback_timeout=callback_timeout,
    )
    namespace = {
        "cancel_methods": allowed,
        "openapi_tag": tag,
        "cancel_options": options,
        "__module__": __name__,
    }
    return type("CancellableRoute", (CancellableRoute,), namespace)


def guard_route(
    app: ASGIApp, methods: frozenset[str], options: CancelOptions = DEFAULTS
) -> ASGIApp:
    """Wrap a route's ASGI app so the whole request runs inside its guard.

    The route sees the raw ``receive`` and ``send``: the guard covers dependencies, the
    endpoint and a streaming response body, and knows exactly when the response is complete
    (a later ``http.disconnect`` is the end of the stream, not a hang-up).
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in methods or SCOPE_KEY in scope:
            await app(scope, receive, send)
            return
        guard = RequestGuard(scope, receive, options)
        response = _ResponseTracker(guard, send)
        guard.enter()  # the guard's protocol (see _guard.py), here without a coroutine of its own
        error: Exception
        try:
            await app(scope, guard.receive, response.send)
        except BaseException as exc:
            cause = await guard.leave(exc)
            if cause is not None:
                error = guard.ending_error(cause)
            elif isinstance(exc, (ClientDisconnected, DeadlineExceeded)):
                error = exc
            else:
                raise
        else:
            cause = await guard.leave(None)
            if cause is None:
                return
            error = guard.ending_error(cause)
        if response.started:
            # The stream is left unfinished on purpose: the client sees a cut body rather
            # than one that looks complete.
            return
        if isinstance(error, ClientDisconnected):
            await answer_middleware(scope, receive, send)
        else:
            raise error from None  # the client still waits: the app's handler answers 504

    return guarded


class _ResponseTracker:
    """Passes the response on and ends the work the moment it is complete."""

    __slots__ = ("_guard", "_send", "_unsent", "started")

    def __init__(self, guard: RequestGuard, send: Send) -> None:
        self._guard = guard
        self._send = send
        self.started = False
        self._unsent: int | None = None  # body bytes still due, when the response declares them

    async def send(self, message: Message) -> None:
        guard = self._guard
        if guard.hung_up:
            return  # nobody reads it, and a send to a closed HTTP/2 stream can block
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            self._unsent = _content_length(message)
        elif completes_response(message):
            guard.end_work()
        elif self._unsent is not None and kind == "http.response.body":
            # A client that has every byte may close before the final empty message
            # (FileResponse sends one): that is the end of the stream, not a hang-up.
            self._unsent -= len(message.get("body", b""))
            if self._unsent <= 0:
                guard.end_work()
        await self._send(message)


def _content_length(start: Message) -> int | None:
    for name, value in start.get("headers", ()):
        if name.lower() == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def completes_response(message: Message) -> bool:
    """Whether ``message`` is the last one of a response."""
    kind = message["type"]
    if kind == "http.response.body":
        return not message.get("more_body", False)
    if kind == "http.response.trailers":
        return not message.get("more_trailers", False)
    return kind in ("http.response.pathsend", "http.response.zerocopysend")
