"""One FastAPI app per entry point, for the tests of the context's features.

Every feature of :class:`CancelOnDisconnect` must behave the same whichever entry point
made the context, so the tests build their app with :func:`guarded_app` and parametrize
over :data:`ENTRY_POINTS`:

- ``dependency``: ``ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(...))]``;
- ``decorator``: ``@cancellable(...)`` on an endpoint without a ``ctx`` parameter, so the
  decorator's own wrapper makes the context (the endpoint finds it in the ASGI scope);
- ``decorator+ctx``: ``@cancellable(...)`` on an endpoint that declares ``ctx: CancelCtx``
  (the decorator hands its settings to that dependency);
- ``route``: a router whose ``route_class`` is ``cancellable_route(...)``, endpoint with
  ``ctx: CancelCtx``.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
runtime, and they name aliases local to the factory.
"""

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, cast

import anyio
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import HTTPConnection

from fastapi_hangup import (
    ALL_METHODS,
    CancelCtx,
    CancelOnDisconnect,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)
from fastapi_hangup._context import SCOPE_KEY

Entry = Literal["dependency", "decorator", "decorator+ctx", "route"]
ENTRY_POINTS: tuple[Entry, ...] = ("dependency", "decorator", "decorator+ctx", "route")
#: Parametrize a test over every entry point (the argument is called ``entry``).
every_entry_point = pytest.mark.parametrize("entry", ENTRY_POINTS)

AsyncWork = Callable[[CancelOnDisconnect], Awaitable[object]]
SyncWork = Callable[[CancelOnDisconnect], object]

PATH = "/work"


def guarded_app(entry: Entry, work: AsyncWork, **options: Any) -> FastAPI:
    """An app whose ``GET /work`` awaits ``work(ctx)`` in a context made by ``entry``.

    ``options`` are the entry point's settings (``deadline``, ``grace``,
    ``deadline_header``, ``callback_timeout``).
    """
    if entry == "dependency":
        Ctx = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(**options))]

        async def with_dependency(ctx: Ctx) -> object:
            return await work(ctx)

        return _app_with(with_dependency)
    if entry == "decorator":

        async def bare(connection: HTTPConnection) -> object:
            return await work(_context_of(connection))

        return _app_with(_decorated(bare, options))

    async def with_ctx(ctx: CancelCtx) -> object:
        return await work(ctx)

    if entry == "decorator+ctx":
        return _app_with(_decorated(with_ctx, options))
    return _app_with(with_ctx, route_options=options)


def guarded_sync_app(entry: Entry, work: SyncWork, **options: Any) -> FastAPI:
    """Like :func:`guarded_app`, with a sync ``def`` endpoint (FastAPI runs it in a thread)."""
    if entry == "dependency":
        Ctx = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(**options))]

        def with_dependency(ctx: Ctx) -> object:
            return work(ctx)

        return _app_with(with_dependency)
    if entry == "decorator":

        def bare(connection: HTTPConnection) -> object:
            return work(_context_of(connection))

        return _app_with(_decorated(bare, options))

    def with_ctx(ctx: CancelCtx) -> object:
        return work(ctx)

    if entry == "decorator+ctx":
        return _app_with(_decorated(with_ctx, options))
    return _app_with(with_ctx, route_options=options)


def _decorated(endpoint: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    decorate = cast(Callable[[Callable[..., Any]], Callable[..., Any]], cancellable(**options))
    return decorate(endpoint)


def _app_with(endpoint: Callable[..., Any], route_options: dict[str, Any] | None = None) -> FastAPI:
    app = FastAPI()
    if route_options is None:
        app.add_api_route(PATH, endpoint, methods=["GET"], response_model=None)
        return app
    router = APIRouter(route_class=cancellable_route(methods=ALL_METHODS, **route_options))
    router.add_api_route(PATH, endpoint, methods=["GET"], response_model=None)
    app.include_router(router)
    return app


def _context_of(connection: HTTPConnection) -> CancelOnDisconnect:
    # The bare decorator gives the endpoint no context; it lives in the ASGI scope while the
    # endpoint runs (where every entry point looks for it). HTTPConnection, not Request: an
    # endpoint's own `request: Request` parameter clashes with the decorator's hidden one.
    return cast(CancelOnDisconnect, connection.scope[SCOPE_KEY])


def hangup_records(caplog: pytest.LogCaptureFixture, status: int | None = None) -> list[Any]:
    """The ``fastapi_hangup`` records of ended requests (optionally with ``status``)."""
    return [
        record
        for record in caplog.records
        if record.name == "fastapi_hangup"
        and hasattr(record, "status_code")
        and (status is None or record.status_code == status)
    ]


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record at ERROR or above, from any logger."""
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


async def eventually(predicate: Callable[[], object], within: float = 3.0) -> bool:
    """Poll ``predicate`` on the event loop until it holds or ``within`` seconds pass."""
    for _ in range(math.ceil(within / 0.005)):
        if predicate():
            return True
        await anyio.sleep(0.005)
    return bool(predicate())
