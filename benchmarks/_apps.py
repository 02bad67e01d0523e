"""One FastAPI app per benchmark variant, so every variant has one route at the same path.

Run as ``uvicorn benchmarks._apps:app`` with ``HANGUP_BENCH_VARIANT`` set to a variant name.
A name ending in ``+await`` gives the same route, but its endpoint awaits
``asyncio.sleep(0)`` once before it answers: it gives control back to the event loop, as
every endpoint worth cancelling does. The peers' variants and the recipes users copy are
in ``benchmarks._peers``; a peer's variant is listed where its package can be imported.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI

from benchmarks._peers import PEERS
from fastapi_hangup import CancelCtx, CancellableRoute, add_cancellation, cancellable

#: Suffix of the variants whose endpoint awaits once.
AWAITS = "+await"


Answer = Callable[[], Awaitable[dict[str, bool]]]


async def _at_once() -> dict[str, bool]:
    return {"ok": True}


async def _after_await() -> dict[str, bool]:
    await asyncio.sleep(0)
    return {"ok": True}


async def _noop() -> None:
    return None


async def _noop_yield() -> AsyncIterator[None]:
    yield


def _plain(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler() -> dict[str, bool]:
        return await answer()


def _noop_dependency(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler(_: Annotated[None, Depends(_noop)]) -> dict[str, bool]:
        return await answer()


def _yield_dependency(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler(_: Annotated[None, Depends(_noop_yield)]) -> dict[str, bool]:
        return await answer()


def _cancel_ctx(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler(ctx: CancelCtx) -> dict[str, bool]:
        return await answer()


def _cancellable(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    @cancellable
    async def handler() -> dict[str, bool]:
        return await answer()


def _route_class(app: FastAPI, answer: Answer) -> None:
    app.router.route_class = CancellableRoute

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return await answer()


def _add_cancellation(app: FastAPI, answer: Answer) -> None:
    add_cancellation(app)

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return await answer()


VARIANTS: dict[str, Callable[[FastAPI, Answer], Any]] = {
    "plain": _plain,
    "noop-dependency": _noop_dependency,
    "noop-yield-dependency": _yield_dependency,
    "cancel_ctx": _cancel_ctx,
    "@cancellable": _cancellable,
    "CancellableRoute": _route_class,
    "add_cancellation": _add_cancellation,
}


for _name, (_builder, _needs) in PEERS.items():
    if _needs is None or importlib.util.find_spec(_needs) is not None:
        VARIANTS[_name] = _builder


def names(awaiting: bool = True) -> list[str]:
    """Every variant's name, and with ``awaiting`` each one's ``+await`` twin after them."""
    return [*VARIANTS, *(f"{v}{AWAITS}" for v in VARIANTS if awaiting)]


def build(variant: str, answer: Answer | None = None) -> FastAPI:
    """Return an app whose only route, ``GET /``, is the given variant.

    ``answer`` replaces the endpoint's work (the memory benchmark holds requests in it).
    """
    base = variant.removesuffix(AWAITS)
    if base not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose from {names()}")
    app = FastAPI()
    VARIANTS[base](app, answer or (_after_await if variant != base else _at_once))
    return app


app = build(os.environ.get("HANGUP_BENCH_VARIANT", "plain"))
