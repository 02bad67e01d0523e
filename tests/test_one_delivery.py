"""On asyncio a hang-up reaches the work once, as ``Task.cancel()`` does; trio is level-triggered.

After the one ``CancelledError``, cleanup awaits (``finally``, ``async with`` exits, a library
that catches, cleans up and re-raises) run as they would under ``task.cancel()``. On trio
every ``await`` in a cancelled scope raises again, as trio code expects. Shields keep their
meaning on both, and work that swallows the cancellation is still stopped.

No ``from __future__ import annotations`` here: the apps are built inside the tests.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import fastapi_hangup._backend
from fastapi_hangup import CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient
from tests._context_apps import EntryPoint

pytestmark = pytest.mark.anyio


@pytest.fixture
def on_trio(anyio_backend: Any) -> bool:
    return bool(anyio_backend == "trio")


async def test_an_await_in_finally_runs_on_asyncio_and_is_cancelled_on_trio(
    entry: EntryPoint, on_trio: bool
) -> None:
    started = anyio.Event()
    written: list[bool] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            await anyio.sleep(0.01)  # writing the request's log line, say
            written.append(ctx.is_cancelled)
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert written == ([] if on_trio else [True])


async def test_a_library_that_cleans_up_and_re_raises_can_await(
    entry: EntryPoint, on_trio: bool
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            await anyio.lowlevel.checkpoint()  # as a driver resets its connection before re-raising
            await anyio.sleep(0.01)
            steps.append("rolled back")
            raise
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ([] if on_trio else ["rolled back"])


async def test_an_async_with_exit_can_await(entry: EntryPoint, on_trio: bool) -> None:
    started = anyio.Event()
    steps: list[str] = []

    @asynccontextmanager
    async def transaction() -> AsyncIterator[None]:
        try:
            yield
        except BaseException:
            await anyio.sleep(0.01)  # ROLLBACK
            steps.append("rollback")
            raise

    async def work(ctx: CancelOnDisconnect) -> object:
        async with transaction():
            started.set()
            await anyio.sleep(5)
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ([] if on_trio else ["rollback"])


async def test_a_timeout_inside_the_cleanup_is_its_own(entry: EntryPoint, on_trio: bool) -> None:
    started = anyio.Event()
    steps: list[object] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            with anyio.move_on_after(0.01) as timeout:
                await anyio.sleep(5)  # a cleanup call that hangs, bounded by its own timeout
            steps.append(timeout.cancelled_caught)
            await anyio.lowlevel.checkpoint()
            steps.append("after")
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ([] if on_trio else [True, "after"])


async def test_the_one_cancellation_waits_for_a_shield_and_cleanup_follows(
    entry: EntryPoint, on_trio: bool
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():
            started.set()
            await anyio.sleep(0.05)  # the hang-up comes here
            steps.append("shielded write done")
        try:
            await anyio.sleep(5)
            steps.append("not cancelled")
        finally:
            await anyio.sleep(0.001)
            steps.append("cleanup")
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == (["shielded write done"] if on_trio else ["shielded write done", "cleanup"])


async def test_a_deadline_is_delivered_once_too(entry: EntryPoint, on_trio: bool) -> None:
    written: list[bool] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        try:
            await anyio.sleep(5)
        finally:
            await anyio.sleep(0.01)
            written.append(True)
        return {}

    result = await HangUpClient(entry.app(work, deadline=0.05)).get("/work")

    assert result.status_code == 504
    assert written == ([] if on_trio else [True])


async def test_work_that_swallows_the_cancellation_is_stopped_after_the_cleanup_timeout(
    entry: EntryPoint, on_trio: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastapi_hangup._backend, "CLEANUP_TIMEOUT", 0.05)
    started = anyio.Event()
    swallowed: list[bool] = []
    steps: list[int] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            swallowed.append(True)  # a bug in the work: it goes on as if nothing happened
        for step in range(200):
            await anyio.sleep(0.01)
            steps.append(step)
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert swallowed == [True]
    if on_trio:
        assert steps == []  # the next await raises again
    else:
        assert 0 < len(steps) < 100  # it ran for the cleanup timeout (about 5 steps), no more
