"""``ctx.on_cancel``: callbacks that run once the work was cancelled, and never otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

import anyio
import anyio.lowlevel
import pytest

from fastapi_hangup import CallbackHandle, CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._context_apps import EntryPoint, error_records
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio

Kind = Literal["sync", "async", "lambda returning a coroutine"]
Ending = Literal["hang-up", "deadline"]
KINDS = pytest.mark.parametrize("kind", ["sync", "async", "lambda returning a coroutine"])
ENDINGS = pytest.mark.parametrize("ending", ["hang-up", "deadline"])


def recording_callback(
    kind: Kind, calls: list[str], name: str = "callback"
) -> Callable[[], object]:
    """A callback of ``kind`` that appends ``name`` to ``calls``."""

    def sync_callback() -> None:
        calls.append(name)

    async def async_callback() -> None:
        await anyio.lowlevel.checkpoint()
        calls.append(name)

    if kind == "sync":
        return sync_callback
    if kind == "async":
        return async_callback
    return lambda: async_callback()


async def run(
    entry: EntryPoint,
    register: Callable[[CancelOnDisconnect], object],
    ending: Ending | None,
    *,
    unwound: list[str] | None = None,
    callback_timeout: float = 5.0,
) -> RequestResult:
    """One request whose endpoint calls ``register(ctx)`` and then works for 5 s (or 10 ms
    when ``ending`` is None); it ends by a hang-up or a 50 ms deadline."""
    started = anyio.Event()

    async def work(ctx: CancelOnDisconnect) -> object:
        register(ctx)
        started.set()
        try:
            await anyio.sleep(0.01 if ending is None else 5)
        finally:
            if unwound is not None:
                unwound.append("endpoint unwound")
        return {"done": True}

    deadline = 0.05 if ending == "deadline" else None
    app = entry.app(work, deadline=deadline, callback_timeout=callback_timeout)
    return await HangUpClient(app).get("/work", hang_up_on=started if ending == "hang-up" else None)


@KINDS
@ENDINGS
async def test_callback_runs_when_the_work_is_cancelled(
    entry: EntryPoint, kind: Kind, ending: Ending
) -> None:
    calls: list[str] = []

    result = await run(entry, lambda ctx: ctx.on_cancel(recording_callback(kind, calls)), ending)

    assert result.context is not None
    assert result.context.is_cancelled
    assert calls == ["callback"]


@KINDS
async def test_callback_never_runs_when_the_work_completes(entry: EntryPoint, kind: Kind) -> None:
    calls: list[str] = []

    result = await run(entry, lambda ctx: ctx.on_cancel(recording_callback(kind, calls)), None)

    assert result.status_code == 200
    assert result.body == b'{"done":true}'
    assert calls == []


@KINDS
@ENDINGS
async def test_callback_runs_after_the_endpoint_unwound(
    entry: EntryPoint, kind: Kind, ending: Ending
) -> None:
    events: list[str] = []

    await run(
        entry, lambda ctx: ctx.on_cancel(recording_callback(kind, events)), ending, unwound=events
    )

    assert events == ["endpoint unwound", "callback"]


@ENDINGS
async def test_async_callback_runs_shielded_from_the_cancellation(
    entry: EntryPoint, ending: Ending
) -> None:
    took: list[float] = []

    async def slow_but_bounded() -> None:
        started = time.monotonic()
        await anyio.sleep(0.1)  # would raise at once if the request's cancellation reached it
        took.append(time.monotonic() - started)

    result = await run(entry, lambda ctx: ctx.on_cancel(slow_but_bounded), ending)

    assert result.context is not None
    assert result.context.is_cancelled
    assert len(took) == 1
    assert took[0] >= 0.099


@ENDINGS
async def test_slow_async_callback_is_cut_at_its_timeout_with_a_warning(
    entry: EntryPoint, ending: Ending, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    stopped: list[float] = []

    async def too_slow() -> None:
        started = time.monotonic()
        try:
            await anyio.sleep(5)
        finally:
            stopped.append(time.monotonic() - started)

    result = await run(entry, lambda ctx: ctx.on_cancel(too_slow, timeout=0.1), ending)

    assert len(stopped) == 1
    assert 0.09 <= stopped[0] < 1.0
    assert result.elapsed < 2.0  # not the callback's 5 s
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.name == "fastapi_hangup"
    assert "did not finish within 0.1 s" in warning.getMessage()


async def test_callback_timeout_setting_is_the_default_limit(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    stopped: list[float] = []

    async def too_slow() -> None:
        started = time.monotonic()
        try:
            await anyio.sleep(5)
        finally:
            stopped.append(time.monotonic() - started)

    await run(entry, lambda ctx: ctx.on_cancel(too_slow), "hang-up", callback_timeout=0.1)

    assert len(stopped) == 1
    assert 0.09 <= stopped[0] < 1.0
    assert any("did not finish within 0.1 s" in r.getMessage() for r in caplog.records)


class Boom(Exception):
    pass


def raising_callback(kind: Kind) -> Callable[[], object]:
    def sync_boom() -> None:
        raise Boom("the queue is down")

    async def async_boom() -> None:
        await anyio.lowlevel.checkpoint()
        raise Boom("the queue is down")

    return sync_boom if kind == "sync" else async_boom


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_raising_callback_is_logged_as_an_error_with_its_traceback(
    entry: EntryPoint, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    await run(entry, lambda ctx: ctx.on_cancel(raising_callback(kind)), "hang-up")

    (record,) = error_records(caplog)
    assert record.name == "fastapi_hangup"
    assert record.levelno == logging.ERROR
    assert "on_cancel callback" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)
    assert "Traceback" in caplog.text
    assert "the queue is down" in caplog.text


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_raising_callback_leaves_the_request_ending_quietly(
    entry: EntryPoint, kind: Kind, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    result = await run(entry, lambda ctx: ctx.on_cancel(raising_callback(kind)), "hang-up")

    assert result.hung_up
    assert result.messages == []
    assert [r.__dict__["status_code"] for r in hang_up_records(caplog)] == [499]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_raising_callback_leaves_the_deadline_answer_intact(
    entry: EntryPoint, kind: Kind
) -> None:
    result = await run(entry, lambda ctx: ctx.on_cancel(raising_callback(kind)), "deadline")

    assert result.status_code == 504


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_raising_callback_does_not_stop_the_other_callbacks(
    entry: EntryPoint, kind: Kind
) -> None:
    calls: list[str] = []

    def register(ctx: CancelOnDisconnect) -> None:
        ctx.on_cancel(recording_callback("sync", calls, "first"))
        ctx.on_cancel(raising_callback(kind))
        ctx.on_cancel(recording_callback("async", calls, "third"))

    await run(entry, register, "hang-up")

    assert calls == ["first", "third"]


async def test_callbacks_run_in_the_order_they_were_registered(entry: EntryPoint) -> None:
    calls: list[str] = []
    kinds: list[Kind] = ["async", "sync", "lambda returning a coroutine", "sync", "async"]

    def register(ctx: CancelOnDisconnect) -> None:
        for number, kind in enumerate(kinds):
            ctx.on_cancel(recording_callback(kind, calls, f"callback {number}"))

    await run(entry, register, "hang-up")

    assert calls == [f"callback {number}" for number in range(len(kinds))]


async def test_removed_callback_does_not_run(entry: EntryPoint) -> None:
    calls: list[str] = []

    def register(ctx: CancelOnDisconnect) -> None:
        ctx.on_cancel(recording_callback("sync", calls, "kept"))
        ctx.on_cancel(recording_callback("sync", calls, "removed")).remove()

    await run(entry, register, "hang-up")

    assert calls == ["kept"]


async def test_remove_returns_true_once_then_false(entry: EntryPoint) -> None:
    answers: list[bool] = []

    def register(ctx: CancelOnDisconnect) -> None:
        handle = ctx.on_cancel(lambda: None)
        answers.extend([handle.remove(), handle.remove(), handle.remove()])

    await run(entry, register, "hang-up")

    assert answers == [True, False, False]


async def test_remove_after_the_callback_ran_returns_false(entry: EntryPoint) -> None:
    handles: list[CallbackHandle] = []
    calls: list[str] = []

    def register(ctx: CancelOnDisconnect) -> None:
        handles.append(ctx.on_cancel(recording_callback("sync", calls)))

    await run(entry, register, "hang-up")

    assert calls == ["callback"]
    assert handles[0].remove() is False


async def test_remove_before_completion_is_harmless(entry: EntryPoint) -> None:
    handles: list[CallbackHandle] = []
    calls: list[str] = []

    def register(ctx: CancelOnDisconnect) -> None:
        handles.append(ctx.on_cancel(recording_callback("sync", calls)))

    result = await run(entry, register, None)

    assert result.status_code == 200
    assert calls == []
    assert handles[0].remove() is True  # never ran: it was still registered
