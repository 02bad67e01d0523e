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
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_process
import psutil
import pytest

from fastapi_hangup import (
    CancelCause,
    CancelOnDisconnect,
    ClientDisconnected,
    DeadlineExceeded,
)
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._context_apps import EntryPoint, app_with, error_records, only_on
from tests._helpers import eventually, hang_up_records

from ._offload import spin, square
from ._processes import is_gone, kill_leftovers, pool_workers

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
async def reaped_process_pool() -> AsyncIterator[None]:
    """Stop anyio's pool workers, and reap them, in the test's own event loop.

    anyio keeps idle workers for the loop's life; at the end of a test's loop it kills them
    without waiting, and each worker's ``Popen`` then warns "subprocess ... is still
    running" in whichever later test the garbage collector happens to free it.
    """
    yield
    try:
        workers = anyio.to_process._process_pool_workers.get()
    except LookupError:
        return  # no worker was started in this loop
    for process in list(workers):
        if process.returncode is None:
            process.kill()
        await process.aclose()
    workers.clear()


# -- Sync endpoints: Python cannot stop a thread, so they stop themselves -------------------


async def test_sync_endpoint_sees_is_cancelled_and_returns_early(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    steps: list[int] = []

    def work(ctx: CancelOnDisconnect) -> object:
        anyio.from_thread.run_sync(started.set)
        for step in range(300):  # 3 s if nobody stops it
            if ctx.is_cancelled:
                break
            time.sleep(0.01)  # one step of blocking work
            steps.append(step)
        return {"rows": len(steps)}

    result = await HangUpClient(entry.sync_app(work)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert len(steps) < 150  # returned early, not at the end of its work
    assert result.elapsed < 2.0
    assert result.messages == []
    assert len(hang_up_records(caplog)) == 1


async def test_sync_endpoint_that_finishes_after_the_hang_up_sends_nothing(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    completed: list[str] = []
    router = entry.router()

    @router.get("/work")
    def work() -> dict[str, str]:
        time.sleep(0.3)  # it never looks at the context: it runs to its end
        completed.append("work")
        return {"late": "answer"}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_after=0.05)

    assert completed == ["work"]
    assert result.cancelled
    assert result.messages == []
    assert len(hang_up_records(caplog)) == 1


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
    entry: EntryPoint, checked: Checked, *, hang_up: bool, deadline: float | None = None
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

    app = entry.sync_app(work, deadline=deadline)
    return await HangUpClient(app).get("/work", hang_up_on=started if hang_up else None)


async def test_check_raises_client_disconnected_in_the_worker_thread_after_a_hang_up(
    entry: EntryPoint,
) -> None:
    checked = Checked()

    result = await run_checking_endpoint(entry, checked, hang_up=True)

    assert isinstance(checked.raised, ClientDisconnected)
    assert checked.cause is CancelCause.CLIENT_DISCONNECTED
    assert checked.thread is not None
    assert checked.thread != threading.get_ident()
    assert checked.steps < 100  # stopped long before its 500 steps
    assert result.elapsed < 2.0


async def test_check_in_a_sync_endpoint_ends_the_request_quietly(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    result = await run_checking_endpoint(entry, Checked(), hang_up=True)

    assert result.hung_up
    assert result.messages == []
    (record,) = hang_up_records(caplog)
    assert record.__dict__["status_code"] == 499
    assert error_records(caplog) == []


async def test_check_raises_deadline_exceeded_in_a_sync_endpoint_after_the_budget(
    entry: EntryPoint,
) -> None:
    checked = Checked()

    await run_checking_endpoint(entry, checked, hang_up=False, deadline=0.1)

    assert isinstance(checked.raised, DeadlineExceeded)
    assert checked.cause is CancelCause.DEADLINE_EXCEEDED
    assert checked.raised_at is not None
    assert checked.deadline is not None
    assert 0 <= checked.raised_at - checked.deadline < 0.5  # at the first check past it


async def test_check_after_the_budget_answers_504(entry: EntryPoint) -> None:
    result = await run_checking_endpoint(entry, Checked(), hang_up=False, deadline=0.1)

    assert result.status_code == 504
    assert json.loads(result.body) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.elapsed < 2.0


async def test_check_after_the_budget_is_logged_once_as_504(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    await run_checking_endpoint(entry, Checked(), hang_up=False, deadline=0.1)

    assert [r.__dict__["status_code"] for r in hang_up_records(caplog)] == [504]
    assert error_records(caplog) == []


async def test_check_does_nothing_while_the_request_is_alive(entry: EntryPoint) -> None:
    def work(ctx: CancelOnDisconnect) -> object:
        for _ in range(3):
            ctx.check()
            time.sleep(0.001)
        return {"checked": 3}

    result = await HangUpClient(entry.sync_app(work, deadline=5.0)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"checked":3}'


async def test_scope_and_shield_refuse_a_worker_thread(entry: EntryPoint) -> None:
    errors: list[str] = []

    def work(ctx: CancelOnDisconnect) -> object:
        uses: list[Callable[[], object]] = [lambda: ctx.scope, ctx.shield]
        for use in uses:
            try:
                use()
            except RuntimeError as exc:
                errors.append(str(exc))
        return {}

    result = await HangUpClient(entry.sync_app(work)).get("/work")

    assert result.status_code == 200
    assert len(errors) == 2
    assert "ctx.scope was used from a worker thread" in errors[0]
    assert "ctx.shield() was used from a worker thread" in errors[1]
    assert all("ctx.is_cancelled" in error for error in errors)  # what to use instead


# -- ctx.run_sync() --------------------------------------------------------------------------
async def test_run_sync_returns_the_blocking_functions_result(entry: EntryPoint) -> None:
    def blocking(a: int, b: int) -> int:
        time.sleep(0.01)
        return a + b

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"sum": await ctx.run_sync(blocking, 2, 3)}

    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"sum":5}'


async def test_run_sync_function_is_stopped_by_its_check_after_a_hang_up(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
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

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert isinstance(checked.raised, ClientDisconnected)
    assert checked.thread is not None
    assert checked.thread != threading.get_ident()
    assert checked.steps < 100
    assert result.elapsed < 2.0
    assert result.messages == []
    assert [r.__dict__["status_code"] for r in hang_up_records(caplog)] == [499]


async def test_run_sync_waits_for_a_function_that_never_checks(entry: EntryPoint) -> None:
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

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert finished == ["the thread ran to its end"]
    assert result.elapsed >= 0.3
    assert result.elapsed < 2.0
    assert result.messages == []


async def test_run_sync_with_abandon_returns_control_at_once_on_hang_up(entry: EntryPoint) -> None:
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
        result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)
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
async def test_run_in_process_returns_the_functions_result(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        return {"square": await ctx.run_in_process(square, 7)}

    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"square":49}'


async def wait_for_pid_file(path: Path, within: float = 15.0) -> int:
    """The pid the busy worker wrote to ``path`` (it may take a while to start)."""
    assert await eventually(path.exists, within=within), "the worker never started the work"
    return int(await anyio.Path(path).read_text())


async def hang_up_on_busy_worker(entry: EntryPoint, pid_file: Path) -> tuple[RequestResult, float]:
    """Run ``spin(30 s)`` in a worker process, hang up once it is busy, and return the
    request's result and how long after the hang-up the worker process was gone."""
    hang_up = anyio.Event()
    results: list[RequestResult] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"turns": await ctx.run_in_process(spin, 30.0, str(pid_file))}

    async def request() -> None:
        results.append(await HangUpClient(entry.app(work)).get("/work", hang_up_on=hang_up))

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


async def test_run_in_process_worker_is_killed_on_hang_up(
    entry: EntryPoint, tmp_path: Path
) -> None:
    result, gone_after = await hang_up_on_busy_worker(entry, tmp_path / "worker.pid")

    print(f"{entry}: worker process gone {gone_after * 1000:.1f} ms after the hang-up")
    assert gone_after < 0.5  # promised: ~immediately (SIGKILL); the work would take 30 s
    assert result.hung_up
    assert result.messages == []
    assert result.context is not None
    assert result.context.cause is CancelCause.CLIENT_DISCONNECTED


@only_on(
    "dependency",
    reason="the pool's recovery after a kill is anyio's, the same whichever entry point made "
    "the context; killing the worker on hang-up is tested on every entry point above",
)
async def test_run_in_process_works_again_after_a_worker_was_killed(
    entry: EntryPoint, tmp_path: Path
) -> None:
    await hang_up_on_busy_worker(entry, tmp_path / "worker.pid")
    killed = int((tmp_path / "worker.pid").read_text())

    async def work(ctx: CancelOnDisconnect) -> object:
        return {"square": await ctx.run_in_process(square, 12), "pid": os.getpid()}

    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    assert json.loads(result.body)["square"] == 144
    assert killed not in [w.pid for w in pool_workers(psutil.Process())]
