"""``@cancellable`` handles every endpoint shape as FastAPI does, and keeps its type.

Regression tests for shapes FastAPI's own suite uses: an ``async def`` behind a sync
``functools.wraps`` decorator, an object with an ``async __call__``, a sync endpoint wrapped
again by an instrumentation decorator, and endpoints called directly in unit tests.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, cancellable
from fastapi_hangup.testing import HangUpClient, assert_cancelled, assert_not_cancelled

pytestmark = pytest.mark.anyio

F = TypeVar("F", bound=Callable[..., Any])


def sync_wraps(func: F) -> F:
    """A sync decorator as instrumentation writes them: it returns whatever ``func`` does."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class AsyncCallable:
    async def __call__(self) -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"shape": "async __call__"}


def shapes_app(started: anyio.Event | None = None) -> FastAPI:
    app = FastAPI()

    @app.get("/async-behind-sync-wraps")
    @cancellable
    @sync_wraps
    async def async_behind_sync_wraps() -> dict[str, str]:
        if started is not None:
            started.set()
        await anyio.sleep(0.01 if started is None else 5)
        return {"shape": "async behind a sync decorator"}

    app.get("/async-call")(cancellable(AsyncCallable()))

    @app.get("/sync-instrumented")
    @sync_wraps
    @cancellable
    def sync_instrumented(ctx: CancelCtx) -> dict[str, Any]:
        return {"shape": "sync, instrumented", "thread": threading.get_ident()}

    return app


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/async-behind-sync-wraps", "async behind a sync decorator"),
        ("/async-call", "async __call__"),
        ("/sync-instrumented", "sync, instrumented"),
    ],
)
async def test_decorated_endpoint_of_every_shape_answers(path: str, shape: str) -> None:
    result = await HangUpClient(shapes_app()).get(path)

    assert result.status_code == 200, result.body
    assert shape.encode() in result.body
    assert_not_cancelled(result)


async def test_async_endpoint_behind_a_sync_decorator_is_cancelled_on_hang_up() -> None:
    started = anyio.Event()
    result = await HangUpClient(shapes_app(started)).get(
        "/async-behind-sync-wraps", hang_up_on=started
    )

    assert_cancelled(result)


async def test_decorated_sync_endpoint_runs_in_fastapis_worker_thread() -> None:
    result = await HangUpClient(shapes_app()).get("/sync-instrumented")

    assert b'"thread"' in result.body
    assert str(threading.get_ident()).encode() not in result.body


def test_decorated_sync_endpoint_called_directly_returns_its_value() -> None:
    @cancellable
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5


async def test_decorated_async_endpoint_called_directly_returns_its_value() -> None:
    @cancellable(deadline=1.0)
    async def add(a: int, b: int) -> int:
        await anyio.lowlevel.checkpoint()
        return a + b

    assert await add(2, 3) == 5
