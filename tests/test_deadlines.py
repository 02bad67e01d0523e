"""Time budgets: ``deadline=``, ``ctx.deadline``, ``ctx.remaining()`` and the inbound header."""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from trio.testing import MockClock

from fastapi_hangup import (
    DEFAULT_DEADLINE_HEADER,
    CancelCause,
    CancelCtx,
    CancelOnDisconnect,
    DeadlineExceeded,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._context_apps import EntryPoint, error_records
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio

ENVOY = DEFAULT_DEADLINE_HEADER


def detail_of(result: RequestResult) -> Any:
    return json.loads(result.body)


# -- The budget runs out -------------------------------------------------------------------
async def test_deadline_cancels_the_endpoint_at_the_budget(entry: EntryPoint) -> None:
    stopped: list[tuple[type[BaseException], float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started = time.monotonic()
        try:
            await anyio.sleep(5)
        except BaseException as exc:
            stopped.append((type(exc), time.monotonic() - started))
            raise
        return {}

    await HangUpClient(entry.app(work, deadline=0.1)).get("/work")

    ((exc_type, after),) = stopped
    print(f"{entry}: cancelled {after * 1000:.1f} ms into a 100 ms budget")
    assert exc_type is anyio.get_cancelled_exc_class()
    assert 0.09 <= after < 1.0


async def test_deadline_answers_504_with_a_json_detail(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(entry.app(work, deadline=0.1)).get("/work")

    assert result.status_code == 504
    assert result.headers["content-type"] == "application/json"
    assert detail_of(result) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.complete
    assert result.elapsed < 1.0


async def test_deadline_is_logged_once_as_504(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    await HangUpClient(entry.app(work, deadline=0.1)).get("/work")

    (record,) = hang_up_records(caplog)
    assert record.__dict__["status_code"] == 504
    assert record.__dict__["cause"] == "deadline_exceeded"
    assert record.levelno == logging.INFO
    assert error_records(caplog) == []


async def test_custom_deadline_exceeded_handler_changes_the_response(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    app = entry.app(work, deadline=0.1)

    @app.exception_handler(DeadlineExceeded)
    async def too_slow(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DeadlineExceeded)
        return JSONResponse({"error": "too slow", "budget": exc.budget}, status_code=503)

    result = await HangUpClient(app).get("/work")

    assert result.status_code == 503
    assert detail_of(result) == {"error": "too slow", "budget": 0.1}


async def test_endpoint_that_finishes_within_the_budget_is_unaffected(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(0.01)
        return {"answer": 42}

    result = await HangUpClient(entry.app(work, deadline=0.2)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"answer":42}'
    assert result.context is not None
    assert result.context.cause is None
    assert hang_up_records(caplog) == []


# -- ctx.deadline and ctx.remaining() --------------------------------------------------------
async def test_deadline_is_the_start_plus_the_budget_in_monotonic_seconds(
    entry: EntryPoint,
) -> None:
    seen: list[tuple[float | None, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append((ctx.deadline, time.monotonic()))
        return {}

    before = time.monotonic()
    await HangUpClient(entry.app(work, deadline=0.5)).get("/work")

    ((deadline, inside),) = seen
    assert deadline is not None
    assert before <= deadline - 0.5 <= inside


async def test_without_a_budget_deadline_is_none_and_remaining_is_inf(entry: EntryPoint) -> None:
    seen: list[tuple[float | None, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append((ctx.deadline, ctx.remaining()))
        await anyio.sleep(0.01)
        seen.append((ctx.deadline, ctx.remaining()))
        return {}

    await HangUpClient(entry.app(work)).get("/work")

    assert seen == [(None, math.inf), (None, math.inf)]


async def test_remaining_decreases_as_time_passes(entry: EntryPoint) -> None:
    samples: list[float] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        for _ in range(5):
            samples.append(ctx.remaining())
            await anyio.sleep(0.01)
        return {}

    await HangUpClient(entry.app(work, deadline=1.0)).get("/work")

    assert len(samples) == 5
    assert all(0 < sample <= 1.0 for sample in samples)
    assert all(later < earlier for earlier, later in itertools.pairwise(samples))
    # four sleeps of 10 ms; uvloop rounds timers to the millisecond and may wake one early
    assert samples[0] - samples[-1] >= 0.035


async def test_remaining_matches_the_deadline(entry: EntryPoint) -> None:
    seen: list[tuple[float, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        before = time.monotonic()
        remaining = ctx.remaining()
        after = time.monotonic()
        assert ctx.deadline is not None
        seen.append((ctx.deadline - after, remaining))
        seen.append((remaining, ctx.deadline - before))
        return {}

    await HangUpClient(entry.app(work, deadline=1.0)).get("/work")

    assert all(low <= high for low, high in seen)


async def test_remaining_is_zero_not_negative_once_the_budget_is_spent(entry: EntryPoint) -> None:
    seen: list[tuple[float, CancelCause | None]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():  # outlive the budget without being cancelled
            await anyio.sleep(0.1)
            seen.append((ctx.remaining(), ctx.cause))
        await anyio.sleep(5)  # the cancellation arrives here
        return {}

    result = await HangUpClient(entry.app(work, deadline=0.05)).get("/work")

    assert seen == [(0.0, CancelCause.DEADLINE_EXCEEDED)]
    assert result.status_code == 504


async def test_response_returned_after_the_budget_still_reaches_the_client(
    entry: EntryPoint,
) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():  # finish the work although the budget runs out meanwhile
            await anyio.sleep(0.15)
        return {"finished": True}  # no await left for the cancellation to arrive at

    result = await HangUpClient(entry.app(work, deadline=0.1)).get("/work")

    # The result (200) or a 504 are both honest answers; silence is not: the client waits.
    assert result.complete
    assert result.status_code in (200, 504)


async def test_deadline_that_cuts_a_task_group_while_the_endpoint_is_shielded_answers_504(
    entry: EntryPoint, anyio_backend_name: str
) -> None:
    # Found by the cascade tests: httpcore closes a response in a shield, inside the
    # endpoint's task group. The deadline cancels the group's other task, not the endpoint,
    # and the group's exit has nothing left to wait for.
    cut: list[bool] = []

    async def part() -> None:
        try:
            await anyio.sleep(5)
        except anyio.get_cancelled_exc_class():
            cut.append(True)
            raise

    async def work(ctx: CancelOnDisconnect) -> object:
        async with anyio.create_task_group() as tg:
            tg.start_soon(part)
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.1)  # the budget ends in here
        return {"built from": "cut work"}

    result = await HangUpClient(entry.app(work, deadline=0.05)).get("/work")

    assert cut == [True]
    if entry.name == "route" and anyio_backend_name == "asyncio":
        # The route class leaves the guard once the response is sent: asyncio's task group
        # exit has no checkpoint that could stop the endpoint (trio's has), so FastAPI
        # sends what it returned, whole.
        assert result.complete
        assert result.status_code == 200
    else:
        assert result.status_code == 504


class TestOnAVirtualClock:
    """A deadline as the event loop's clock sees it.

    The scope's deadline runs on the event loop's clock, while the context decides whether
    "the deadline passed" with ``time.monotonic()``. The two agree on plain asyncio; under
    uvloop (whose cached millisecond clock can be a little behind) the deadline now and then
    fires before ``time.monotonic()`` reaches it, and the real-server tests saw 500s for it
    on uvicorn-httptools, granian and gunicorn. trio's ``MockClock`` makes that certain: it
    jumps the loop's clock to the next deadline while ``time.monotonic()`` stands still.
    """

    @pytest.fixture
    def anyio_backend(self) -> tuple[str, dict[str, object]]:
        return ("trio", {"clock": MockClock(autojump_threshold=0)})

    async def test_deadline_on_the_event_loops_clock_answers_504(self, entry: EntryPoint) -> None:
        async def work(ctx: CancelOnDisconnect) -> object:
            await anyio.sleep(60)
            return {}

        result = await HangUpClient(entry.app(work, deadline=2.0)).get("/work")

        assert result.status_code == 504


# -- A deadline during a streaming body ------------------------------------------------------


#: The dependency with a 0.1 s budget (module level: FastAPI resolves the annotations here).
Ctx100ms = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=0.1))]


async def ten_lines(stopped: list[object]) -> AsyncIterator[str]:
    """Ten lines, 30 ms apart; ``stopped`` records how the body ended."""
    try:
        for number in range(10):
            yield f"line {number}\n"
            await anyio.sleep(0.03)
    except BaseException as exc:
        stopped.append(type(exc))
        raise
    stopped.append("complete")


async def test_deadline_during_a_streaming_body_ends_the_stream_without_a_504(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    stopped: list[object] = []
    app = FastAPI()
    router = APIRouter(route_class=cancellable_route(deadline=0.1))

    @router.get("/stream")
    async def stream(ctx: CancelCtx) -> StreamingResponse:
        return StreamingResponse(ten_lines(stopped), media_type="text/plain")

    app.include_router(router)

    result = await HangUpClient(app).get("/stream")

    starts = [m for m in result.messages if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [200]  # no 504 after the response started
    assert not result.complete  # the stream was cut off, not finished with a fake end
    assert 0 < result.body.count(b"\n") < 10
    assert b"".join(f"line {n}\n".encode() for n in range(10)).startswith(result.body)
    assert stopped == [anyio.get_cancelled_exc_class()]
    assert result.context is not None
    assert result.context.cause is CancelCause.DEADLINE_EXCEEDED
    assert result.elapsed < 1.0
    assert error_records(caplog) == []


async def test_dependency_deadline_does_not_touch_the_body_streamed_after_the_endpoint() -> None:
    stopped: list[object] = []
    app = FastAPI()

    @app.get("/stream")
    async def stream(ctx: Ctx100ms) -> StreamingResponse:
        return StreamingResponse(ten_lines(stopped), media_type="text/plain")

    result = await HangUpClient(app).get("/stream")

    # The dependency covers the endpoint's work only: the body is sent after it returned.
    assert result.status_code == 200
    assert result.complete
    assert stopped == ["complete"]


# -- The inbound deadline header: its parsing is unit-tested in test_options.py; here, the wiring


async def test_deadline_header_shortens_the_budget(entry: EntryPoint) -> None:
    seen: list[float] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append(ctx.remaining())
        return {}

    app = entry.app(work, deadline=5.0, deadline_header=True)
    result = await HangUpClient(app).get("/work", headers={ENVOY: "1000"})

    assert result.status_code == 200
    (remaining,) = seen
    assert 0.5 < remaining <= 1.0


async def test_deadline_header_budget_cancels_the_endpoint_with_504(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    app = entry.app(work, deadline=5.0, deadline_header=True)
    result = await HangUpClient(app).get("/work", headers={ENVOY: "100"})

    assert result.status_code == 504
    assert detail_of(result) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.elapsed < 1.0


# -- Invalid settings fail when the route is defined (every case: test_options.py) -------------


def define_dependency(**options: Any) -> object:
    return cancel_ctx_with(**options)


def define_decorator(**options: Any) -> object:
    return cancellable(**options)


def define_route_class(**options: Any) -> object:
    return cancellable_route(**options)


DEFINITIONS = pytest.mark.parametrize(
    "define",
    [define_dependency, define_decorator, define_route_class],
    ids=["dependency", "decorator", "route"],
)


@DEFINITIONS
@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("deadline", 0, "deadline must be a positive number of seconds"),
        ("grace", -0.1, "grace must be zero or a positive number"),
        ("deadline_header", "x budget", "is not a valid HTTP header name"),
        ("callback_timeout", math.nan, "callback_timeout must be a positive number"),
    ],
    ids=["deadline", "grace", "deadline_header", "callback_timeout"],
)
def test_invalid_setting_fails_at_definition_time(
    define: Callable[..., object], setting: str, value: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        define(**{setting: value})


@DEFINITIONS
def test_valid_settings_are_accepted_at_definition_time(define: Callable[..., object]) -> None:
    assert define(deadline=0.1, grace=0.0, deadline_header="x-budget-ms", callback_timeout=0.5)
