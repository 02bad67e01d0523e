"""Static types of the public API, checked by ``mypy --strict`` (and run by pytest).

``assert_type`` fails the type check, not the test run, when an inferred type drifts.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import assert_type, get_args

import anyio
from fastapi import Depends
from starlette.requests import HTTPConnection

from fastapi_hangup import (
    CallbackHandle,
    CancelCause,
    CancelCtx,
    CancellableRoute,
    CancelOnDisconnect,
    cancel_ctx,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)


async def endpoint(q: str) -> dict[str, str]:
    return {"q": q}


def sync_endpoint(q: str) -> int:
    return len(q)


async def decorated_types() -> None:
    """Never called: calling what the decorator returns gives the endpoint's own result
    type, not Any."""
    assert_type(await cancellable(endpoint)("x"), dict[str, str])
    assert_type(cancellable()(sync_endpoint)("x"), int)
    assert_type(cancellable(False)(sync_endpoint)("x"), int)
    assert_type(cancellable(methods={"GET"}, deadline=1.0)(sync_endpoint)("x"), int)


def test_route_factory_returns_a_route_class() -> None:
    route_class = cancellable_route(tag="cancellable")
    assert_type(route_class, type[CancellableRoute])
    assert issubclass(route_class, CancellableRoute)


def test_configured_dependency_is_called_like_cancel_ctx() -> None:
    configured = cancel_ctx_with(deadline=2.0)
    assert_type(configured, Callable[[HTTPConnection], Awaitable[CancelOnDisconnect]])
    assert configured is not cancel_ctx


def test_alias_names_the_context_and_the_dependency() -> None:
    context_type, marker = get_args(CancelCtx)
    assert context_type is CancelOnDisconnect
    assert isinstance(marker, type(Depends()))
    assert marker.dependency is cancel_ctx


def context_members(ctx: CancelOnDisconnect) -> None:
    """Never called: its body is what mypy checks."""
    assert_type(ctx.cause, CancelCause | None)
    assert_type(ctx.is_cancelled, bool)
    assert_type(ctx.scope, anyio.CancelScope)
    assert_type(ctx.shield(), anyio.CancelScope)
    assert_type(ctx.shield(timeout=1.0), anyio.CancelScope)
    assert_type(ctx.deadline, float | None)
    assert_type(ctx.remaining(), float)
    assert_type(ctx.on_cancel(lambda: None), CallbackHandle)
    assert_type(ctx.on_cancel(lambda: None).remove(), bool)
    assert_type(ctx.check(), None)


async def context_offload(ctx: CancelOnDisconnect) -> None:
    """Never called: the result types of the offload helpers follow the function's."""
    assert_type(await ctx.run_sync(sync_endpoint, "x"), int)
    assert_type(await ctx.run_in_process(math.sqrt, 2.0), float)
