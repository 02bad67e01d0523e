"""The entry points of a guarded websocket session: the dependency, ``add_cancellation``'s
middleware, and the check that keeps ``@cancellable`` off websocket endpoints."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from fastapi_hangup._backend import is_innermost
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._fastapi import route_websocket, websocket_channels
from fastapi_hangup._options import CancelOptions
from fastapi_hangup._policy import is_cancel_dependency
from fastapi_hangup._state import inert_context
from fastapi_hangup._websocket import SCOPE_KEY, WebSocketGuard


def guard_websocket_app(app: ASGIApp, options: CancelOptions) -> ASGIApp:
    """Run a websocket route's ASGI app in a guard (``add_cancellation(websockets=True)``)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if SCOPE_KEY in scope:  # guarded already (a route reached twice)
            await app(scope, receive, send)
            return
        guard = WebSocketGuard(scope, receive, send, options)
        guard.enter()
        try:
            await app(scope, guard.receive, guard.send)
        except BaseException as exc:
            if not await guard.leave(exc):
                raise
        else:
            await guard.leave(None)

    return guarded


def reject_websocket_endpoint(func: Callable[..., Any], name: str) -> None:
    """Fail if ``func`` takes a ``WebSocket``: ``@cancellable`` is for HTTP endpoints.

    Raises:
        TypeError: saying what guards a websocket endpoint instead.
    """
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # no signature to read: FastAPI will complain itself
        return
    if any(p.annotation in (WebSocket, "WebSocket") for p in parameters):
        raise TypeError(
            f"@cancellable is for HTTP endpoints, and {name} is a websocket endpoint. Declare "
            "`ctx: CancelCtx` as its parameter to guard the session instead (or use "
            "add_cancellation(app, websockets=True))."
        )


# The dependency's entry: ``ctx: CancelCtx`` on a websocket route.

WEBSOCKETS_MARK = "__fastapi_hangup_websockets__"
"""Set on a ``cancel_ctx_with(websockets=True)`` dependency: it guards websocket routes too,
also where it is not a parameter (``FastAPI(dependencies=[...])``, a router's)."""

_ASKS_MARK = "__fastapi_hangup_asks__"  # the answer of asks_for_guard, kept on the route


def asks_for_guard(route: Any) -> bool:
    """Whether a websocket route asked for its session to be guarded.

    It asks with a ``ctx: CancelCtx`` parameter (of the endpoint, or of a dependency among
    its parameters), or with a ``cancel_ctx_with(websockets=True)`` dependency anywhere. A
    plain ``Depends(cancel_ctx)`` in ``dependencies=[...]`` (an app's or router's, meant for
    HTTP routes) does not.
    """
    asks = getattr(route, _ASKS_MARK, None)
    if not isinstance(asks, bool):
        dependant = getattr(route, "dependant", None)
        asks = dependant is not None and any(
            _asks(sub, as_parameter=sub.name is not None) for sub in dependant.dependencies
        )
        with contextlib.suppress(AttributeError):  # a slotted route object: ask every time
            setattr(route, _ASKS_MARK, asks)
    return asks


def _asks(dependant: Any, *, as_parameter: bool) -> bool:
    call = dependant.call
    if getattr(call, WEBSOCKETS_MARK, False) is True:
        return True
    if as_parameter and is_cancel_dependency(call):
        return True
    return any(_asks(sub, as_parameter=as_parameter) for sub in dependant.dependencies)


def open_session(
    websocket: WebSocket, options: CancelOptions, stacks: tuple[AsyncExitStack, AsyncExitStack]
) -> CancelOnDisconnect:
    """Guard the session of ``websocket`` from the dependency, if its route asked for it."""
    scope = websocket.scope
    if not asks_for_guard(scope.get("route")):
        return inert_context(scope)
    receive, send = websocket_channels(websocket)
    guard = WebSocketGuard(scope, receive, send, options)
    route_websocket(websocket, guard.receive, guard.send)
    guard.enter()
    request_stack, function_stack = stacks
    exits = _SessionExits(guard)
    request_stack.push_async_exit(exits)
    function_stack.push_async_exit(exits)
    return guard.ctx


class _SessionExits:
    """The session guard's exit on both of FastAPI's stacks, as ``_dependency._Exits``: the
    first call (the function stack's, when the endpoint returns or raises) leaves the guard
    if that keeps cancel scopes nested; the request stack's leaves it otherwise."""

    __slots__ = ("_function_closed", "_guard")

    def __init__(self, guard: WebSocketGuard) -> None:
        self._guard = guard
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
            self._function_closed = True
            guard.end_work()
            if is_innermost(guard.cancel_scope):
                return await guard.leave(exc)
            return False
        if not guard.finished:
            return await guard.leave(exc)
        return False
