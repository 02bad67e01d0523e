"""``cancel_ctx``: the dependency that puts the endpoint's work in a cancel scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Annotated, cast

from fastapi import Depends, Request, WebSocket
from starlette.requests import HTTPConnection

from fastapi_hangup._backend import is_innermost
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._fastapi import exit_stacks, request_send, runs_an_endpoint
from fastapi_hangup._guard import RequestGuard, current_guard
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import DEPENDENCY_MARK
from fastapi_hangup._quiet import answer_middleware
from fastapi_hangup._state import inert_context
from fastapi_hangup._ws_entry import WEBSOCKETS_MARK, open_session

Dependency = Callable[[HTTPConnection], Awaitable[CancelOnDisconnect]]


async def cancel_ctx(connection: HTTPConnection) -> CancelOnDisconnect:
    """Give the endpoint the request's cancellation context.

    The context is a [`CancelOnDisconnect`][fastapi_hangup.CancelOnDisconnect]. Use it as
    ``Depends(cancel_ctx)`` (or through the [`CancelCtx`][fastapi_hangup.CancelCtx] alias). The
    context's scope is entered while dependencies are solved and left when the endpoint
    function returns (or, if a yield dependency solved after it holds a cancel scope of its own
    open, when the request ends); the watcher stops the moment the endpoint function
    returns, before the response is sent, so ``http.disconnect`` after a complete response
    (which every server sends) and BackgroundTasks are never affected. The default
    ``scope="request"`` and ``scope="function"`` behave the same.

    When the client hangs up while the endpoint works, the endpoint gets the backend's
    cancellation exception at its next ``await``. The request then ends quietly: nothing is
    sent, one record goes to the ``fastapi_hangup`` logger, and the rest of the request sees
    [`ClientDisconnected`][fastapi_hangup.ClientDisconnected].

    If the route is a [`CancellableRoute`][fastapi_hangup.CancellableRoute] (or the endpoint is
    ``@cancellable``), the dependency returns that entry point's context: one request has one
    context. On a websocket route, a ``ctx: CancelCtx`` parameter guards the session (see
    [Websockets](websockets.md)). Where an app-wide ``dependencies=[Depends(cancel_ctx)]``
    reaches more than HTTP endpoints, on websocket routes (unless made with
    ``cancel_ctx_with(websockets=True)``) and the files of ``app.frontend()``, it steps aside:
    the context it gives there is never cancelled.

    Raises:
        RuntimeError: outside a FastAPI route (for example, called by hand).
    """
    return _open(connection, DEFAULTS)


def cancel_ctx_with(
    *,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
    websockets: bool = False,
) -> Dependency:
    """Return a ``cancel_ctx`` dependency with settings of its own.

    ``Depends(cancel_ctx_with(deadline=2.0))`` behaves like ``Depends(cancel_ctx)`` and also
    gives the work a time budget.

    Args:
        deadline: the time budget in seconds. When it runs out the endpoint is cancelled and
            the client (still waiting) gets ``504`` with ``{"detail": "Deadline exceeded: ..."}``
            (from [`DeadlineExceeded`][fastapi_hangup.DeadlineExceeded]; a handler of yours can
            answer differently).
        grace: seconds between noticing a hang-up (``is_cancelled`` turns true at once) and
            delivering the cancellation, so code at a safe point can stop by itself first.
        deadline_header: honour an inbound deadline header: ``True`` for
            ``x-envoy-expected-rq-timeout-ms`` (Envoy's convention, milliseconds), or a header
            name of your own with the same format. A client can only shorten the budget;
            a malformed value is ignored.
        callback_timeout: the default time limit of ``on_cancel`` callbacks.
        websockets: guard websocket routes too where the dependency is not a parameter:
            ``FastAPI(dependencies=[Depends(cancel_ctx_with(websockets=True))])`` (or a
            router's). A ``ctx: CancelCtx`` parameter guards its websocket route anyway.

    Raises:
        ValueError: for a setting out of range, when the route is defined.
    """
    options = CancelOptions.build(
        deadline=deadline,
        grace=grace,
        deadline_header=deadline_header,
        callback_timeout=callback_timeout,
    )
    return dependency_for(options, websockets=websockets)


def dependency_for(
    options: CancelOptions, methods: frozenset[str] | None = None, *, websockets: bool = False
) -> Dependency:
    """The ``cancel_ctx`` dependency for already-checked settings.

    With ``methods``, requests of other methods are not guarded (``@cancellable(methods=...)``
    on a sync endpoint); they get a context that is never cancelled.
    """
    if options == DEFAULTS and methods is None and not websockets:
        return cancel_ctx

    async def cancel_ctx_configured(connection: HTTPConnection) -> CancelOnDisconnect:
        if methods is not None and connection.scope.get("method") not in methods:
            existing = current_guard(connection.scope)
            return existing.ctx if existing is not None else inert_context(connection.scope)
        return _open(connection, options)

    setattr(cancel_ctx_configured, DEPENDENCY_MARK, True)
    if websockets:
        setattr(cancel_ctx_configured, WEBSOCKETS_MARK, True)
    return cancel_ctx_configured


def _open(connection: HTTPConnection, options: CancelOptions) -> CancelOnDisconnect:
    scope = connection.scope
    existing = current_guard(scope)
    if existing is not None:
        return existing.ctx
    stacks = exit_stacks(scope)
    if stacks is None:
        raise RuntimeError(
            "cancel_ctx must be solved by FastAPI for a route: declare it as "
            "`ctx: CancelCtx` or `Depends(cancel_ctx)` in a path operation, not call it yourself."
        )
    if scope["type"] == "websocket":
        return open_session(cast(WebSocket, connection), options, stacks)
    if not runs_an_endpoint(scope):
        return inert_context(scope)  # app.frontend()'s files: nothing to stop
    request_stack, function_stack = stacks
    request = cast(Request, connection)
    guard = RequestGuard(scope, request.receive, options, request)
    guard.enter()
    exits = _Exits(guard, request)
    request_stack.push_async_exit(exits)
    function_stack.push_async_exit(exits)
    return guard.ctx


class _Exits:
    """The guard's two exit-stack entries, as one object with an ``__aexit__`` (which
    ``AsyncExitStack`` takes faster than a plain callback), pushed on both stacks.

    FastAPI closes the function stack when the endpoint returns and the request stack after
    the response (``_fastapi.exit_stacks``), so the first call is the function stack's.
    """

    __slots__ = ("_function_closed", "_guard", "_request")

    def __init__(self, guard: RequestGuard, request: Request) -> None:
        self._guard = guard
        self._request = request
        self._function_closed = False

    async def __aenter__(self) -> None:  # what an async context manager has: never called
        raise NotImplementedError

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        guard = self._guard
        if not self._function_closed:
            # The endpoint returned (or raised): the work is over. The guard is left here if
            # that keeps cancel scopes nested, which is when its scope is the innermost one
            # still open: a function-scoped yield dependency solved earlier may hold a scope
            # of its own around ours and closes right after. Otherwise something solved later
            # on the request stack holds one inside ours (FastAPI's cleanup scope, a yield
            # dependency's task group), and the guard is left on the request stack, after it.
            self._function_closed = True
            guard.end_work()
            if is_innermost(guard.cancel_scope):
                return await _leave(guard, self._request, exc)
            if exc is None and guard.hung_up:
                # The client left, but the endpoint finished without another await: there is
                # nobody to send the response to, and sending can block (hypercorn, HTTP/2).
                raise ClientDisconnected()
            return False
        # The request is over: leave the guard if the function stack did not.
        if not guard.finished:
            return await _leave(guard, self._request, exc)
        if exc is None:
            return False
        ending = guard.unwrapped(exc)
        if ending is not None:
            raise ending  # a yield dependency's task group wrapped it: handlers see it again
        return False


async def _leave(guard: RequestGuard, request: Request, exc: BaseException | None) -> bool:
    cause = await guard.leave(exc)
    if cause is None:
        return False  # whatever the work raised goes on
    error = guard.ending_error(cause)
    if isinstance(error, ClientDisconnected):
        await answer_middleware(request.scope, request.receive, request_send(request))
    raise error from None


setattr(cancel_ctx, DEPENDENCY_MARK, True)

CancelCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx)]
"""``ctx: CancelCtx`` is short for ``ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx)]``."""
