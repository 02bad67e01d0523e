"""Sync endpoints and offloaded work: ``ctx.check()``, ``ctx.run_sync()``, ``ctx.run_in_process()``.

Offloading to a process runs on both backends: anyio's process pool talks to its workers over
pipes of ``anyio.open_process``, which trio supports as well as asyncio.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.from_thread
import psutil
import pytest

from fastapi_hangup import (
    CancelCause,
    CancelOnDisconnect,
    ClientDisconnected,
    DeadlineExceeded,
)
from fastapi_hangup.testing import HangUpClient, RequestResult

from ._context_apps import (
    Entry,
    error_records,
    eventually,
    every_entry_point,
    guarded_app,
    guarded_sync_app,
    hangup_records,
)
from ._offload import spin, square
from ._processes import is_gone, kill_leftovers, pool_workers

pytestmark = pytest.mark.anyio


# -- ctx.check() in a sync endpoint ----------------------------------------------------------


class Checked:
    """What a sync endpoint that calls ``ctx.check()`` between steps saw, in its thread."""

    def __init__(self) -> None:
        self.steps = 0
        self.raised: BaseException | None = None
        self.cause: CancelCause | None = None
        self.thread: int | None = None
        self.deadline: float | None = None
        self.raised_at: float | None = None


async def run_checking_endpoint(
    entry: Entry, checked: Checked, *, hang_up: bool, deadline: float | None = None
) -> RequestResult:
    """A sync endpoint: up to 500 steps of 10 ms (5 s), ``ctx.check()`` before each."""
    started = anyio.Event()

    def work(ctx: CancelOnDisconnect) -> object:
        checked.thread = threading.get_ident()
        checked.deadline = ctx.deadline
        anyio.from_thread.run_sync(started.set)
        try:
            for _ in range(500):
                ctx.check()
                time.sleep(0.01)
                checked.steps += 1
        except BaseException as exc:
            checked.raised_at = time.monotonic()
            checked.raised = exc
            checked.cause = ctx.cause
            raise
        return {"steps": checked.steps}

    app = guarded_sync_app(entry, work, deadline=deadline)
    return await HangUpClient(app).get("/work", hang_up_on=started if hang_up else None)


@every_entry_point
async def test_check_raises_client_disconnected_in_the_worker_thread_after_a_hang_up(
    entry: Entry,
) -> None:
    checked = Checked()

    result = await run_checking_endpoint(entry, checked, hang_up=True)

    assert isinstance(checked.raised, ClientDisconnected)
    assert checked.cause is CancelCause.CLIENT_DISCONNECTED
    assert checked.thread is not None
    assert checked.thread != threading.get_ident()
    assert checked.steps < 100  # stopped long before its 500 steps
    assert result.elapsed < 2.0


@every_entry_point
async def test_check_in_a_sync_endpoint_ends_the_request_quietly(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    result = await run_checking_endpoint(entry, Checked(), hang_up=True)

    assert result.hung_up
    assert result.messages == []
    (record,) = hangup_records(caplog)
    assert record.status_code == 499
    assert error_records(caplog) == []


@every_entry_point
async def test_check_raises_deadline_exceeded_in_a_sync_endpoint_after_the_budget(
    entry: Entry,
) -> None:
    checked = Checked()

    await run_checking_endpoint(entry, checked, hang_up=False, deadline=0.1)

    assert isinstance(checked.raised, DeadlineExceeded)
    assert checked.cause is CancelCause.DEADLINE_EXCEEDED
    assert checked.raised_at is not None
    assert checked.deadline is not None
    assert 0 <= checked.raised_at - checked.deadline < 0.5  # at the first check past it


@every_entry_point
async def test_check_after_the_budget_answers_504(entry: Entry) -> None:
    result = await run_checking_endpoint(entry, Checked(), hang_up=False, deadline=0.1)

    assert result.status_code == 504
    assert json.loads(result.body) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.elapsed < 2.0


@pytest.mark.parametrize(
    "entry",
    ["dependency", "decorator", "decorator+ctx", "route"],
)
async def test_check_after_the_budget_is_logged_once_as_504(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    await run_checking_endpoint(entry, Checked(), hang_up=False, deadline=0.1)

    assert [r.status_code for r in hangup_records(caplog)] == [504]
    assert error_records(caplog) == []


@every_entry_point
async def test_check_does_nothing_while_the_request_is_alive(entry: Entry) -> None:
    def work(ctx: CancelOnDisconnect) -> object:
        for _ in range(3):
            ctx.check()
            time.sleep(0.001)
        return {"checked": 3}

    result = await HangUpClient(guarded_sync_app(entry, work, deadline=5.0)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"checked":3}'


@every_entry_point
async def test_scope_and_shield_refuse_a_worker_thread(entry: Entry) -> None:
    errors: list[str] = []

    def work(ctx: CancelOnDisconnect) -> object:
        uses: list[Callable[[], object]] = [lambda: ctx.scope, ctx.shield]
        for use in uses:
            try:
                use()
            except RuntimeError as exc:
                errors.append(str(exc))
        return {}

    await HangUpClient(guarded_sync_app(entry, work)).get("/work")

    assert len(errors) == 2
    assert all("worker thread" in error for error in errors)


# -- ctx.run_sync() --------------------------------------------------------------------------


@every_entry_point
async def test_run_sync_returns_the_blocking_functions_result(entry: Entry) -> None:
    def blocking(a: int, b: int) -> int:
        time.sleep(0.01)
        return a + b

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"sum": await ctx.run_sync(blocking, 2, 3)}

    result = await HangUpClient(guarded_app(entry, work)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"sum":5}'


@every_entry_point
async def test_run_sync_function_is_stopped_by_its_check_after_a_hang_up(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    checked = Checked()

    def blocking(ctx: CancelOnDisconnect) -> int:
        checked.thread = threading.get_ident()
        anyio.from_thread.run_sync(started.set)  # hang up once the thread runs
        try:
            for _ in range(500):
                ctx.check()
                time.sleep(0.01)
                checked.steps += 1
        except BaseException as exc:
            checked.raised = exc
            raise
        return checked.steps

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"steps": await ctx.run_sync(blocking, ctx)}

    result = await HangUpClient(guarded_app(entry, work)).get("/work", hang_up_on=started)

    assert isinstance(checked.raised, ClientDisconnected)
    assert checked.thread is not None
    assert checked.thread != threading.get_ident()
    assert checked.steps < 100
    assert result.elapsed < 2.0
    assert result.messages == []
    assert [r.status_code for r in hangup_records(caplog)] == [499]


@every_entry_point
async def test_run_sync_waits_for_a_function_that_never_checks(entry: Entry) -> None:
    started = anyio.Event()
    finished: list[str] = []

    def blocking() -> None:
        anyio.from_thread.run_sync(started.set)  # hang up once the thread runs
        time.sleep(0.3)
        finished.append("the thread ran to its end")

    async def work(ctx: CancelOnDisconnect) -> object:
        await ctx.run_sync(blocking)
        await anyio.sleep(5)  # the hang-up's cancellation arrives here at the latest
        return {}

    result = await HangUpClient(guarded_app(entry, work)).get("/work", hang_up_on=started)

    assert finished == ["the thread ran to its end"]
    assert result.elapsed >= 0.3
    assert result.elapsed < 2.0
    assert result.messages == []


@every_entry_point
async def test_run_sync_with_abandon_returns_control_at_once_on_hang_up(entry: Entry) -> None:
    started = anyio.Event()
    release = threading.Event()
    thread_done = threading.Event()
    cancelled_at: list[float] = []

    def blocking() -> None:
        try:
            # Hang up once the thread runs: a cancellation before it picks the call up
            # would abandon a call that never started.
            anyio.from_thread.run_sync(started.set)
            release.wait(10)  # bounded, in case the test fails before it releases us
        finally:
            thread_done.set()

    async def work(ctx: CancelOnDisconnect) -> object:
        try:
            await ctx.run_sync(blocking, abandon=True)
        except anyio.get_cancelled_exc_class():
            cancelled_at.append(time.monotonic())
            raise
        return {}

    try:
        result = await HangUpClient(guarded_app(entry, work)).get("/work", hang_up_on=started)
        still_running = not thread_done.is_set()
    finally:
        release.set()
        assert await eventually(thread_done.is_set, within=5.0)

    assert result.hung_up_at is not None
    assert len(cancelled_at) == 1
    print(f"{entry}: abandoned the thread {(cancelled_at[0] - result.hung_up_at) * 1000:.2f} ms")
    assert cancelled_at[0] - result.hung_up_at < 0.5
    assert still_running  # the thread ran on unseen
    assert result.messages == []


# -- ctx.run_in_process() --------------------------------------------------------------------


@every_entry_point
async def test_run_in_process_returns_the_functions_result(entry: Entry) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        return {"square": await ctx.run_in_process(square, 7)}

    result = await HangUpClient(guarded_app(entry, work)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"square":49}'


async def wait_for_pid_file(path: Path, within: float = 15.0) -> int:
    """The pid the busy worker wrote to ``path`` (it may take a while to start)."""
    assert await eventually(path.exists, within=within), "the worker never started the work"
    return int(await anyio.Path(path).read_text())


async def hang_up_on_busy_worker(entry: Entry, pid_file: Path) -> tuple[RequestResult, float]:
    """Run ``spin(30 s)`` in a worker process, hang up once it is busy, and return the
    request's result and how long after the hang-up the worker process was gone."""
    hang_up = anyio.Event()
    results: list[RequestResult] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"turns": await ctx.run_in_process(spin, 30.0, str(pid_file))}

    async def request() -> None:
        results.append(
            await HangUpClient(guarded_app(entry, work)).get("/work", hang_up_on=hang_up)
        )

    workers: list[psutil.Process] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            busy_pid = await wait_for_pid_file(pid_file)
            workers = pool_workers(psutil.Process())  # recorded while the work runs
            assert [w.pid for w in workers] == [busy_pid]
            assert not is_gone(workers[0])
            hang_up.set()
            for _ in range(5000):  # 5 s at most, in steps of 1 ms
                if is_gone(workers[0]):
                    break
                await anyio.sleep(0.001)
            gone_at = time.monotonic()
    finally:
        kill_leftovers(workers)
    (result,) = results
    assert result.hung_up_at is not None
    assert is_gone(workers[0]), "the worker process still runs 5 s after the hang-up"
    return result, gone_at - result.hung_up_at


@every_entry_point
async def test_run_in_process_worker_is_killed_on_hang_up(entry: Entry, tmp_path: Path) -> None:
    result, gone_after = await hang_up_on_busy_worker(entry, tmp_path / "worker.pid")

    print(f"{entry}: worker process gone {gone_after * 1000:.1f} ms after the hang-up")
    assert gone_after < 0.5  # promised: ~immediately (SIGKILL); the work would take 30 s
    assert result.hung_up
    assert result.messages == []
    assert result.context is not None
    assert result.context.cause is CancelCause.CLIENT_DISCONNECTED


@every_entry_point
async def test_run_in_process_works_again_after_a_worker_was_killed(
    entry: Entry, tmp_path: Path
) -> None:
    await hang_up_on_busy_worker(entry, tmp_path / "worker.pid")
    killed = int((tmp_path / "worker.pid").read_text())

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"square": await ctx.run_in_process(square, 12), "pid": os.getpid()}

    result = await HangUpClient(guarded_app(entry, work)).get("/work")

    assert result.status_code == 200
    assert json.loads(result.body)["square"] == 144
    assert killed not in [w.pid for w in pool_workers(psutil.Process())]
