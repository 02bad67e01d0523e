"""Apps behind ``@app.middleware("http")`` (Starlette's ``BaseHTTPMiddleware``), which most
real apps have, for ``test_middleware_e2e.py``.

Served as ``tests.e2e.middleware_app:app`` (fastapi-hangup's own quiet handler for
``ClientDisconnected``) and ``tests.e2e.middleware_app:counting_app`` (the app's own handler,
which returns ``None`` and records a ``handled`` event). Each has one slow route per entry
point, every one a 30 s :func:`work` unless the client hangs up first:

- ``/mw/dependency``: ``ctx: CancelCtx``;
- ``/mw/decorator``: ``@cancellable`` on an endpoint without ``ctx``;
- ``/mw/route``: an ``APIRouter(route_class=CancellableRoute)``, with ``ctx: CancelCtx``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response

from fastapi_hangup import CancelCtx, CancellableRoute, ClientDisconnected, cancellable

from ._app_kit import make_app, work
from ._events import record

#: The path of each entry point's slow route.
ENTRY_POINTS = {
    "dependency": "/mw/dependency",
    "decorator": "/mw/decorator",
    "route": "/mw/route",
}


def build(*, own_handler: bool) -> FastAPI:
    """The app, with or without its own ``ClientDisconnected`` handler."""
    app = make_app()

    @app.middleware("http")
    async def passthrough(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await call_next(request)

    if own_handler:

        @app.exception_handler(ClientDisconnected)
        async def count_hang_up(request: Request, exc: ClientDisconnected) -> None:
            record(request.query_params.get("rid", "-"), "handled", path=request.url.path)

    @app.get(ENTRY_POINTS["dependency"])
    async def with_dependency(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
        await work(rid, seconds, ctx)
        return {"rid": rid}

    @app.get(ENTRY_POINTS["decorator"])
    @cancellable
    async def with_decorator(rid: str, seconds: float = 30.0) -> dict[str, str]:
        await work(rid, seconds)
        return {"rid": rid}

    router = APIRouter(route_class=CancellableRoute)

    @router.get(ENTRY_POINTS["route"])
    async def with_route_class(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
        await work(rid, seconds, ctx)
        return {"rid": rid}

    app.include_router(router)
    return app


app = build(own_handler=False)
counting_app = build(own_handler=True)
