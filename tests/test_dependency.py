"""What is specific to ``Depends(cancel_ctx)``: the ways to declare it, its place among the
request's dependencies (exit order), and the misuse errors it gives.

The promises every entry point keeps (hang-up, transparency, lossless bodies, ...) are tested
once for all four in the feature files, through the ``entry`` fixture.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
dependencies do not live.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from fastapi import (
    Depends,
    FastAPI,
    Request,
)

from fastapi_hangup import (
    CancelCtx,
    CancelOnDisconnect,
    ClientDisconnected,
    cancel_ctx,
)
from fastapi_hangup.testing import HangUpClient
from tests._asgi import ScriptedReceive, http_scope

pytestmark = pytest.mark.anyio

FunctionScopedCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx, scope="function")]
UncachedCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx, use_cache=False)]
Work = Callable[[CancelOnDisconnect], Awaitable[object]]
Mode = Literal["once", "repeat"]

DECLARATIONS = pytest.mark.parametrize("declared", ["plain", "function-scope", "alias"])
MODES = pytest.mark.parametrize("disconnect", ["once", "repeat"])


def guarded_app(work: Work) -> FastAPI:
    """An app with one route per way to declare the dependency, each doing ``work(ctx)``."""
    app = FastAPI()

    @app.get("/plain/{item_id}", response_model=None)
    async def plain(
        item_id: int,
        ctx: CancelOnDisconnect = Depends(cancel_ctx),  # noqa: B008 - the form users write
    ) -> object:
        return await work(ctx)

    @app.get("/function-scope/{item_id}", response_model=None)
    async def function_scope(item_id: int, ctx: FunctionScopedCtx) -> object:
        return await work(ctx)

    @app.get("/alias/{item_id}", response_model=None)
    async def alias(item_id: int, ctx: CancelCtx) -> object:
        return await work(ctx)

    return app


# -- Every way to declare it ------------------------------------------------------------------


@DECLARATIONS
@MODES
async def test_every_declaration_cancels_at_the_next_await_and_runs_finally(
    declared: str, disconnect: Mode
) -> None:
    started = anyio.Event()
    steps: list[str] = []
    cancelled_at: list[float] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
            steps.append("after the await")
        finally:
            cancelled_at.append(time.monotonic())
            steps.append(f"finally, is_cancelled={ctx.is_cancelled}")
        return {}

    client = HangUpClient(guarded_app(work), disconnect=disconnect)
    result = await client.get(f"/{declared}/7", hang_up_on=started)

    assert steps == ["finally, is_cancelled=True"]
    assert result.cancelled
    assert result.messages == []
    assert result.hung_up_at is not None
    assert cancelled_at[0] - result.hung_up_at < 1.0  # milliseconds in practice


# -- Its place among the request's dependencies ----------------------------------------------


async def test_hang_up_while_a_later_dependency_awaits_cancels_it_quietly() -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def fetch_user(ctx: CancelCtx) -> str:
        started.set()
        try:
            await anyio.sleep(5)  # the auth service round trip
        finally:
            steps.append(f"dependency stopped, is_cancelled={ctx.is_cancelled}")
        return "user"

    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[str, Depends(fetch_user)]) -> str:
        steps.append("endpoint ran")
        return user

    result = await HangUpClient(app).get("/me", hang_up_on=started)

    assert steps == ["dependency stopped, is_cancelled=True"]
    assert result.messages == []


async def test_dependency_runs_for_requests_that_fail_validation() -> None:
    # Path parameters are validated with the dependencies, after cancel_ctx was solved.
    app = FastAPI(dependencies=[Depends(cancel_ctx)])

    @app.get("/typed/{number}")
    async def typed(number: int) -> dict[str, int]:
        return {"number": number}  # never runs: the request fails validation

    result = await HangUpClient(app).get("/typed/abc")

    assert result.status_code == 422
    assert result.context is not None


@pytest.mark.parametrize("dependency_scope", ["request", "function"])
async def test_yield_dependency_after_cancel_ctx_is_closed_on_hang_up(
    dependency_scope: Literal["request", "function"],
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def connection() -> AsyncIterator[str]:
        try:
            yield "connection"
        finally:
            await anyio.sleep(0.01)  # closing a connection awaits
            steps.append("connection closed")

    app = FastAPI()

    @app.get("/query")
    async def query(
        ctx: CancelCtx,
        conn: Annotated[str, Depends(connection, scope=dependency_scope)],
    ) -> None:
        started.set()
        await anyio.sleep(5)

    result = await HangUpClient(app).get("/query", hang_up_on=started)

    assert steps == ["connection closed"]
    assert result.cancelled
    assert result.messages == []


async def test_yield_dependency_before_cancel_ctx_sees_client_disconnected() -> None:
    started = anyio.Event()
    seen: list[BaseException] = []

    async def transaction() -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            seen.append(exc)
            raise

    app = FastAPI()

    @app.get("/write")
    async def write(tx: Annotated[None, Depends(transaction)], ctx: CancelCtx) -> None:
        started.set()
        await anyio.sleep(5)

    result = await HangUpClient(app).get("/write", hang_up_on=started)

    assert len(seen) == 1
    assert type(seen[0]) is ClientDisconnected
    assert result.messages == []


# -- Misuse gets an error that teaches -----------------------------------------------------


async def test_calling_cancel_ctx_by_hand_explains_how_to_declare_it() -> None:
    request = Request(http_scope("GET", "/"), ScriptedReceive())

    with pytest.raises(RuntimeError, match=r"must be solved by FastAPI.*CancelCtx"):
        await cancel_ctx(request)


def test_depends_on_the_context_class_explains_itself_at_definition() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="declare the parameter as `ctx: CancelCtx`"):

        @app.get("/x")
        async def x(ctx: Annotated[CancelOnDisconnect, Depends()]) -> None:
            return None


def test_bare_context_annotation_explains_itself_at_definition() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="declare the parameter as `ctx: CancelCtx`"):

        @app.get("/y")
        async def y(ctx: CancelOnDisconnect) -> None:
            return None
