"""``cancel_ctx``: the dependency that puts the endpoint's work in a cancel scope."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Annotated, cast

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from fastapi_hangup._context import SCOPE_KEY, CancelOnDisconnect
from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._guard import open_context
from fastapi_hangup._openapi import DEPENDENCY_MARK
from fastapi_hangup._options import DEFAULTS, CancelOptions

Dependency = Callable[[HTTPConnection], Awaitable[CancelOnDisconnect]]


async def cancel_ctx(connection: HTTPConnection) -> CancelOnDisconnect:
    """Give the endpoint the request's :class:`CancelOnDisconnect` context.

    Use it as ``Depends(cancel_ctx)`` (or through the :data:`CancelCtx` alias). The context's
    scope is entered while dependencies are solved and stays open until the request ends;
    the watcher stops the moment the endpoint function returns, before the response is sent,
    so ``http.disconnect`` after a complete response (which every server sends) and
    BackgroundTasks are never affected. The default ``scope="request"`` and
    ``scope="function"`` behave the same.

    When the client hangs up while the endpoint works, the endpoint gets the backend's
    cancellation exception at its next ``await``. The request then ends quietly: nothing is
    sent, one record goes to the ``fastapi_hangup`` logger, and the rest of the request sees
    :class:`ClientDisconnected`.

    If the route is a :class:`CancellableRoute` (or the endpoint is ``@cancellable``), the
    dependency returns that entry point's context: one request has one context.

    Raises:
        TypeError: on a websocket route.
        RuntimeError: outside a FastAPI route (for example, called by hand).
    """
    return _open(connection, DEFAULTS)


def cancel_ctx_with(
    *,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
) -> Dependency:
    """Return a ``cancel_ctx`` dependency with settings of its own.

    ``Depends(cancel_ctx_with(deadline=2.0))`` behaves like ``Depends(cancel_ctx)`` and also
    gives the work a time budget.

    Args:
        deadline: the time budget in seconds. When it runs out the endpoint is cancelled and
            the client (still waiting) gets ``504`` with ``{"detail": "Deadline exceeded: ..."}``
            (from :class:`DeadlineExceeded`; a handler of yours can answer differently).
        grace: seconds between noticing a hang-up (``is_cancelled`` turns true at once) and
            delivering the cancellation, so code at a safe point can stop by itself first.
        deadline_header: honour an inbound deadline header: ``True`` for
            ``x-envoy-expected-rq-timeout-ms`` (Envoy's convention, milliseconds), or a header
            name of your own with the same format. A client can only shorten the budget;
            a malformed value is ignored.
        callback_timeout: the default time limit of ``on_cancel`` callbacks.

    Raises:
        ValueError: for a setting out of range, when the route is defined.
    """
    options = CancelOptions.build(
        deadline=deadline,
        grace=grace,
        deadline_header=deadline_header,
        callback_timeout=callback_timeout,
    )
    return dependency_for(options)


def dependency_for(
    options: CancelOptions,
) -> Callable[[HTTPConnection], Awaitable[CancelOnDisconnect]]:
    """The ``cancel_ctx`` dependency for already-checked settings."""
    if options == DEFAULTS:
        return cancel_ctx

    async def cancel_ctx_configured(connection: HTTPConnection) -> CancelOnDisconnect:
        return _open(connection, options)

    setattr(cancel_ctx_configured, DEPENDENCY_MARK, True)
    return cancel_ctx_configured


def _open(connection: HTTPConnection, options: CancelOptions) -> CancelOnDisconnect:
    scope = connection.scope
    existing = scope.get(SCOPE_KEY)
    if existing is not None:
        return cast(CancelOnDisconnect, existing)
    request_stack = scope.get("fastapi_inner_astack")
    function_stack = scope.get("fastapi_function_astack")
    if not isinstance(request_stack, AsyncExitStack) or not isinstance(
        function_stack, AsyncExitStack
    ):
        raise RuntimeError(
            "cancel_ctx must be solved by FastAPI for a route: declare it as "
            "`ctx: CancelCtx` or `Depends(cancel_ctx)` in a path operation, not call it yourself."
        )
    ctx = open_context(cast(Request, connection), options)
    # The scope lives on the request stack, not the function stack: yield dependencies and
    # FastAPI's own cleanup scope are entered later on the request stack and must exit first.
    request_stack.push_async_exit(_exit_request(ctx))
    function_stack.push(_exit_function(ctx))
    return ctx


def _exit_function(ctx: CancelOnDisconnect) -> Callable[..., bool]:
    def exit_function(exc_type: object, exc: BaseException | None, tb: object) -> bool:
        ctx.end_work()
        if exc is None and ctx.hung_up:
            # The client left, but the endpoint finished without another await: there is
            # nobody to send the response to, and sending can block (hypercorn over HTTP/2).
            raise ClientDisconnected()
        return False

    return exit_function


def _exit_request(ctx: CancelOnDisconnect) -> Callable[..., Awaitable[bool]]:
    async def exit_request(
        exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        cause = await ctx.close(exc)
        if cause is not None:
            raise ctx.ending_error(cause) from None
        return False

    return exit_request


setattr(cancel_ctx, DEPENDENCY_MARK, True)

CancelCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx)]
"""``ctx: CancelCtx`` is short for ``ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx)]``."""
