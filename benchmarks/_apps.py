"""One FastAPI app per benchmark variant, so every variant has one route at the same path.

Run as ``uvicorn benchmarks._apps:app`` with ``HANGUP_BENCH_VARIANT`` set to a variant name.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from fastapi_hangup import CancelCtx, CancellableRoute, add_cancellation, cancellable


async def _noop() -> None:
    return None


async def _noop_yield() -> AsyncIterator[None]:
    yield


def _plain(app: FastAPI) -> None:
    @app.get("/")
    async def handler() -> dict[str, bool]:
        return {"ok": True}


def _noop_dependency(app: FastAPI) -> None:
    @app.get("/")
    async def handler(_: Annotated[None, Depends(_noop)]) -> dict[str, bool]:
        return {"ok": True}


def _yield_dependency(app: FastAPI) -> None:
    @app.get("/")
    async def handler(_: Annotated[None, Depends(_noop_yield)]) -> dict[str, bool]:
        return {"ok": True}


def _cancel_ctx(app: FastAPI) -> None:
    @app.get("/")
    async def handler(ctx: CancelCtx) -> dict[str, bool]:
        return {"ok": True}


def _cancellable(app: FastAPI) -> None:
    @app.get("/")
    @cancellable
    async def handler() -> dict[str, bool]:
        return {"ok": True}


def _route_class(app: FastAPI) -> None:
    app.router.route_class = CancellableRoute

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return {"ok": True}


def _add_cancellation(app: FastAPI) -> None:
    add_cancellation(app)

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return {"ok": True}


VARIANTS: dict[str, Callable[[FastAPI], Any]] = {
    "plain": _plain,
    "noop-dependency": _noop_dependency,
    "noop-yield-dependency": _yield_dependency,
    "cancel_ctx": _cancel_ctx,
    "@cancellable": _cancellable,
    "CancellableRoute": _route_class,
    "add_cancellation": _add_cancellation,
}


def build(variant: str) -> FastAPI:
    """Return an app whose only route, ``GET /``, is the given variant."""
    app = FastAPI()
    VARIANTS[variant](app)
    return app


app = build(os.environ.get("HANGUP_BENCH_VARIANT", "plain"))
