"""The request guard inside real FastAPI apps: nesting with other cancel scopes, a broken
server ``receive``, the log record's timing, ``Expect: 100-continue`` and freeing by reference
counting. Each test is a regression test for a defect FastAPI's own suite or a trial found."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import pytest
from fastapi import Depends, FastAPI

from fastapi_hangup import CancelCtx, CancelOnDisconnect, _backend, cancel_ctx_with, cancellable
from fastapi_hangup._guard import RequestGuard
from fastapi_hangup.testing import HangUpClient, assert_cancelled, assert_not_cancelled
from tests._asgi import BODY_END, RecordingSend, ScriptedReceive, http_scope
from tests._context_apps import PATH, EntryPoint
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio


# -- Cancel scopes nest: yield dependencies may hold scopes of their own across `yield` ------


async def function_scope_held() -> AsyncIterator[str]:
    with anyio.CancelScope():
        yield "function"


async def task_group_held() -> AsyncIterator[str]:
    async with anyio.create_task_group():
        yield "request"


def nesting_app() -> FastAPI:
    app = FastAPI()

    @app.get(
        "/function-first",
        dependencies=[Depends(function_scope_held, scope="function")],
    )
    async def function_first(ctx: CancelCtx) -> dict[str, bool]:
        await anyio.sleep(0.01)
        return {"cancelled": ctx.is_cancelled}

    @app.get("/request-after")
    async def request_after(
        ctx: CancelCtx, held: Annotated[str, Depends(task_group_held)]
    ) -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"held": held}

    @app.get("/function-after")
    async def function_after(
        ctx: CancelCtx, held: Annotated[str, Depends(function_scope_held, scope="function")]
    ) -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"held": held}

    @app.get(
        "/function-task-group",
        dependencies=[Depends(task_group_held, scope="function")],
    )
    async def function_task_group(ctx: CancelCtx) -> dict[str, bool]:
        await anyio.sleep(0.01)
        return {"cancelled": ctx.is_cancelled}

    @app.get(
        "/decorated-task-group",
        dependencies=[Depends(task_group_held, scope="function")],
    )
    @cancellable
    async def decorated_task_group() -> dict[str, bool]:
        await anyio.sleep(0.01)
        return {"ok": True}

    return app


NESTING_PATHS = [
    "/function-first",
    "/request-after",
    "/function-after",
    "/function-task-group",
    "/decorated-task-group",
]


@pytest.mark.parametrize("path", NESTING_PATHS)
async def test_dependency_nests_with_scopes_that_yield_dependencies_hold(path: str) -> None:
    result = await HangUpClient(nesting_app()).get(path)

    assert result.status_code == 200
    assert_not_cancelled(result)


@pytest.mark.parametrize("path", NESTING_PATHS)
async def test_hang_up_with_scopes_that_yield_dependencies_hold_ends_quietly(
    path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fastapi_hangup")
    result = await HangUpClient(nesting_app()).get(path, hang_up_after_start=0)

    assert_cancelled(result)  # no ExceptionGroup escaped: the test client would raise it
    assert result.messages == []
    assert len(hang_up_records(caplog, 499)) == 1


# -- A server whose receive() raises a BaseException -----------------------------------------


class FailedOutcome(BaseException):
    """What ``pytest.fail`` raises in a fake receive: not an ``Exception``."""


async def test_base_exception_from_receive_stays_with_the_readers() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(ctx: CancelCtx) -> dict[str, bool]:
        await anyio.sleep(0.01)  # the watcher reads the raw receive meanwhile
        return {"cancelled": ctx.is_cancelled}

    async def receive() -> Any:
        raise FailedOutcome("receive() should not matter to this GET")

    send = RecordingSend()
    with anyio.fail_after(5):
        await app(http_scope("GET", "/"), receive, send)

    assert send.status == 200  # plain FastAPI never reads this GET's body either


# -- The log record says how long the work ran ---------------------------------------------


async def test_log_record_gives_the_work_duration_and_when_the_client_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(ctx: CancelCtx) -> None:
        try:
            await anyio.sleep(5)
        finally:
            with ctx.shield():
                await anyio.sleep(0.3)  # a shielded write that outlives the hang-up

    caplog.set_level(logging.INFO, "fastapi_hangup")
    result = await HangUpClient(app).get("/", hang_up_after_start=0.05)

    assert_cancelled(result)
    (record,) = hang_up_records(caplog, 499)
    assert record.work_ms >= 300  # type: ignore[attr-defined]
    assert 40 <= record.hang_up_ms < record.work_ms  # type: ignore[attr-defined]
    assert "(the client left after" in record.getMessage()


# -- Expect: 100-continue ------------------------------------------------------------------


async def test_watcher_does_not_read_a_body_the_client_waits_to_be_asked_for() -> None:
    app = FastAPI()

    @app.post("/")
    async def endpoint(ctx: CancelCtx) -> dict[str, str]:
        await anyio.sleep(0.05)  # the watcher would be armed here
        return {"read": "nothing"}

    receive = ScriptedReceive([BODY_END])
    send = RecordingSend()
    scope = http_scope("POST", "/", {"expect": "100-continue", "content-length": "0"})
    with anyio.fail_after(5):
        await app(scope, receive, send)

    assert send.status == 200
    assert receive.calls == 0  # uvicorn and granian would have sent "100 Continue" on a call


async def test_a_body_read_after_expect_continue_is_watched_from_then_on() -> None:
    app = FastAPI()
    started = anyio.Event()

    @app.post("/")
    async def endpoint(body: dict[str, int], ctx: CancelCtx) -> None:
        started.set()
        await anyio.sleep(5)

    client = HangUpClient(app)
    result = await client.post(
        "/",
        body=b'{"a": 1}',
        headers={"expect": "100-continue", "content-type": "application/json"},
        hang_up_on=started,
    )

    assert_cancelled(result)


# -- Freed by reference counting -----------------------------------------------------------


def contexts_alive() -> int:
    return sum(isinstance(o, CancelOnDisconnect) for o in gc.get_objects())


def guards_alive() -> int:
    return sum(isinstance(o, RequestGuard) for o in gc.get_objects())


async def left_alive(app: FastAPI, path: str, count: Callable[[], int]) -> int:
    """How many more of what ``count`` counts live after five requests, the cyclic GC off."""

    async def request() -> None:
        send = RecordingSend()
        await app(http_scope("GET", path), ScriptedReceive([BODY_END]), send)
        assert send.status == 200

    await request()  # warm up: FastAPI's caches fill on the first request
    gc.collect()
    gc.disable()
    try:
        before = count()
        for _ in range(5):
            await request()
        return count() - before
    finally:
        gc.enable()


async def test_context_is_freed_without_the_cyclic_garbage_collector() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(ctx: CancelCtx) -> dict[str, bool]:
        await anyio.sleep(0.01)  # the watcher runs, and is stopped
        return {"ok": True}

    assert await left_alive(app, "/", contexts_alive) == 0


async def test_context_of_a_hang_up_is_not_kept_alive() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(ctx: CancelCtx) -> None:
        await anyio.sleep(5)

    client = HangUpClient(app)
    await client.get("/", hang_up_after_start=0)  # warm up
    gc.collect()
    before = contexts_alive()
    for _ in range(5):
        assert (await client.get("/", hang_up_after_start=0)).cancelled
    # The cancellation's traceback links frames in cycles (as any exception through
    # FastAPI's exit stacks does); the garbage collector frees them, nothing else holds on.
    gc.collect()
    assert contexts_alive() - before == 0


async def test_a_request_over_before_its_watcher_is_armed_is_freed_when_it_ends(
    entry: EntryPoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The arming timer does not fire during the test: what it holds, it holds to the end.
    monkeypatch.setattr(_backend, "ARM_DELAY", 60.0)

    async def work(ctx: CancelOnDisconnect) -> dict[str, bool]:
        return {"ok": True}

    # The timer's pending armings hold none of the guards.
    assert await left_alive(entry.app(work), PATH, guards_alive) == 0


# -- A timeout set to the remaining budget is the deadline ---------------------------------

Budgeted = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=0.05))]


async def test_own_timeout_set_to_the_remaining_budget_answers_504(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "fastapi_hangup")
    app = FastAPI()

    @app.get("/")
    async def endpoint(ctx: Budgeted) -> None:
        # Whichever timer fires first, this one or the guard's, the answer is the same.
        with anyio.fail_after(ctx.remaining()):
            await anyio.sleep(5)

    result = await HangUpClient(app).get("/")

    assert result.status_code == 504
    assert len(hang_up_records(caplog, 504)) == 1
