"""A grace period between noticing a hang-up and delivering it, and ``ctx.shield(timeout=)``."""

from __future__ import annotations

import logging
import time

import anyio
import pytest

from fastapi_hangup import CancelCause, CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._context_apps import AsyncWork, EntryPoint, error_records
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio

GRACE = 0.3


class Stop:
    """How and when an endpoint's work stopped (``time.monotonic()`` stamps)."""

    def __init__(self) -> None:
        self.noticed_at: float | None = None
        self.cause_when_noticed: CancelCause | None = None
        self.cancelled_at: float | None = None
        self.returned_at: float | None = None


async def run_cooperative(entry: EntryPoint, stop: Stop) -> RequestResult:
    """An endpoint that works in short shielded steps and stops itself once it sees
    ``ctx.is_cancelled``; the client hangs up once it works."""
    started = anyio.Event()

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            for _ in range(1000):  # 10 s at most
                if ctx.is_cancelled:
                    stop.noticed_at = time.monotonic()
                    stop.cause_when_noticed = ctx.cause
                    break
                with ctx.shield():
                    await anyio.sleep(0.005)
        except anyio.get_cancelled_exc_class():
            stop.cancelled_at = time.monotonic()
            raise
        stop.returned_at = time.monotonic()
        return {"stopped": True}

    app = entry.app(work, grace=GRACE)
    return await HangUpClient(app).get("/work", hang_up_on=started)


async def run_ignoring(entry: EntryPoint, stop: Stop) -> RequestResult:
    """An endpoint that just awaits 5 s and never looks at ``ctx.is_cancelled``."""
    started = anyio.Event()

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            stop.cancelled_at = time.monotonic()
            raise
        return {}

    app = entry.app(work, grace=GRACE)
    return await HangUpClient(app).get("/work", hang_up_on=started)


async def test_with_grace_is_cancelled_and_cause_turn_true_at_once_on_hang_up(
    entry: EntryPoint,
) -> None:
    stop = Stop()

    result = await run_cooperative(entry, stop)

    assert result.hung_up_at is not None
    assert stop.noticed_at is not None
    print(f"{entry}: is_cancelled seen {(stop.noticed_at - result.hung_up_at) * 1000:.1f} ms")
    assert stop.noticed_at - result.hung_up_at < GRACE / 2  # long before the grace ends
    assert stop.cause_when_noticed is CancelCause.CLIENT_DISCONNECTED


async def test_with_grace_an_endpoint_that_checks_stops_itself_before_the_cancellation(
    entry: EntryPoint,
) -> None:
    stop = Stop()

    result = await run_cooperative(entry, stop)

    assert stop.cancelled_at is None  # no cancellation exception reached it
    assert stop.returned_at is not None
    assert result.hung_up_at is not None
    assert stop.returned_at - result.hung_up_at < GRACE
    assert result.elapsed < 2.0


async def test_with_grace_an_endpoint_that_ignores_it_is_cancelled_after_the_grace_period(
    entry: EntryPoint,
) -> None:
    stop = Stop()

    result = await run_ignoring(entry, stop)

    assert result.hung_up_at is not None
    assert stop.cancelled_at is not None
    after = stop.cancelled_at - result.hung_up_at
    print(f"{entry}: cancelled {after * 1000:.1f} ms after the hang-up (grace {GRACE} s)")
    assert GRACE - 0.01 <= after < GRACE + 0.5


async def test_with_grace_the_context_is_cancelled_while_the_work_still_runs(
    entry: EntryPoint,
) -> None:
    started = anyio.Event()
    hang_up = anyio.Event()
    contexts: list[CancelOnDisconnect] = []
    finished: list[str] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        contexts.append(ctx)
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            finished.append("endpoint unwound")
        return {}

    async def request() -> None:
        app = entry.app(work, grace=GRACE)
        await HangUpClient(app).get("/work", hang_up_on=hang_up)

    async with anyio.create_task_group() as tg:
        tg.start_soon(request)
        await started.wait()
        (ctx,) = contexts
        assert (ctx.is_cancelled, ctx.cause) == (False, None)
        hang_up.set()
        await anyio.sleep(GRACE / 3)
        seen = (ctx.is_cancelled, ctx.cause, list(finished))

    assert seen == (True, CancelCause.CLIENT_DISCONNECTED, [])
    assert finished == ["endpoint unwound"]


@pytest.mark.parametrize("endpoint", ["checks", "ignores"])
async def test_with_grace_the_request_still_ends_quietly_with_one_499_record(
    entry: EntryPoint, endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    run = run_cooperative if endpoint == "checks" else run_ignoring

    result = await run(entry, Stop())

    assert result.hung_up
    assert result.messages == []
    assert [r.__dict__["status_code"] for r in hang_up_records(caplog)] == [499]
    assert error_records(caplog) == []


# -- ctx.shield(timeout=) ----------------------------------------------------------------


class Block:
    """What happened in and after a ``with ctx.shield(timeout=...)`` block."""

    def __init__(self) -> None:
        self.took: float | None = None
        self.cancelled_caught: bool | None = None
        self.steps: list[str] = []


def shielded_work(
    block: Block, *, work_time: float, timeout: float, started: anyio.Event
) -> AsyncWork:
    """Work that sleeps ``work_time`` in ``ctx.shield(timeout=timeout)``, then awaits again."""

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        begun = time.monotonic()
        with ctx.shield(timeout=timeout) as scope:
            await anyio.sleep(work_time)
            block.steps.append("block finished")
        block.took = time.monotonic() - begun
        block.cancelled_caught = scope.cancelled_caught
        block.steps.append("after the block")
        await anyio.sleep(0.01)
        block.steps.append("after the next await")
        return {"caught": scope.cancelled_caught}

    return work


async def test_shield_timeout_cuts_a_block_that_runs_longer(entry: EntryPoint) -> None:
    block = Block()
    work = shielded_work(block, work_time=5, timeout=0.1, started=anyio.Event())

    result = await HangUpClient(entry.app(work)).get("/work")

    assert block.cancelled_caught is True
    assert block.took is not None
    assert 0.09 <= block.took < 1.0
    assert block.steps == ["after the block", "after the next await"]
    assert result.status_code == 200
    assert result.body == b'{"caught":true}'


async def test_shield_timeout_leaves_a_shorter_block_alone(entry: EntryPoint) -> None:
    block = Block()
    work = shielded_work(block, work_time=0.01, timeout=1.0, started=anyio.Event())

    result = await HangUpClient(entry.app(work)).get("/work")

    assert block.cancelled_caught is False
    assert block.steps == ["block finished", "after the block", "after the next await"]
    assert result.body == b'{"caught":false}'


async def test_shield_timeout_block_is_shielded_from_the_hang_up_until_its_timeout(
    entry: EntryPoint,
) -> None:
    block = Block()
    started = anyio.Event()
    work = shielded_work(block, work_time=5, timeout=0.2, started=started)

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.hung_up
    assert block.took is not None
    assert 0.199 <= block.took < 1.0
    assert block.cancelled_caught is True


@pytest.mark.parametrize("work_time", [5, 0.05], ids=["block-timed-out", "block-completed"])
async def test_hang_up_during_a_shield_timeout_block_arrives_at_the_next_await(
    entry: EntryPoint, work_time: float, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    block = Block()
    started = anyio.Event()
    work = shielded_work(block, work_time=work_time, timeout=0.2, started=started)

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    expected = ["after the block"] if work_time > 0.2 else ["block finished", "after the block"]
    assert block.steps == expected  # never "after the next await"
    assert result.messages == []
    assert [r.__dict__["status_code"] for r in hang_up_records(caplog)] == [499]


async def test_shield_and_scope_refuse_use_after_the_request_ended(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        return {}

    result = await HangUpClient(entry.app(work)).get("/work")
    ctx = result.context
    assert ctx is not None

    # The likely cause, named in the message: a background task that kept the context.
    ended = r"was used after its request ended.*background task"
    with pytest.raises(RuntimeError, match=rf"ctx\.shield\(\) {ended}"):
        ctx.shield(timeout=1.0)
    with pytest.raises(RuntimeError, match=rf"ctx\.scope {ended}"):
        _ = ctx.scope
