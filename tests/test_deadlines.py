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
from fastapi import APIRouter, BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send
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

from ._context_apps import (
    Entry,
    error_records,
    every_entry_point,
    guarded_app,
    hangup_records,
)

pytestmark = pytest.mark.anyio

ENVOY = DEFAULT_DEADLINE_HEADER


def detail_of(result: RequestResult) -> Any:
    return json.loads(result.body)


# -- The budget runs out -------------------------------------------------------------------


@every_entry_point
async def test_deadline_cancels_the_endpoint_at_the_budget(entry: Entry) -> None:
    stopped: list[tuple[type[BaseException], float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started = time.monotonic()
        try:
            await anyio.sleep(5)
        except BaseException as exc:
            stopped.append((type(exc), time.monotonic() - started))
            raise
        return {}

    await HangUpClient(guarded_app(entry, work, deadline=0.1)).get("/work")

    ((exc_type, after),) = stopped
    print(f"{entry}: cancelled {after * 1000:.1f} ms into a 100 ms budget")
    assert exc_type is anyio.get_cancelled_exc_class()
    assert 0.09 <= after < 1.0


@every_entry_point
async def test_deadline_answers_504_with_a_json_detail(entry: Entry) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(guarded_app(entry, work, deadline=0.1)).get("/work")

    assert result.status_code == 504
    assert result.headers["content-type"] == "application/json"
    assert detail_of(result) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.complete
    assert result.elapsed < 1.0


@every_entry_point
async def test_deadline_is_logged_once_as_504(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    await HangUpClient(guarded_app(entry, work, deadline=0.1)).get("/work")

    (record,) = hangup_records(caplog)
    assert record.status_code == 504
    assert record.cause == "deadline_exceeded"
    assert record.levelno == logging.INFO
    assert error_records(caplog) == []


@every_entry_point
async def test_custom_deadline_exceeded_handler_changes_the_response(entry: Entry) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    app = guarded_app(entry, work, deadline=0.1)

    @app.exception_handler(DeadlineExceeded)
    async def too_slow(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DeadlineExceeded)
        return JSONResponse({"error": "too slow", "budget": exc.budget}, status_code=503)

    result = await HangUpClient(app).get("/work")

    assert result.status_code == 503
    assert detail_of(result) == {"error": "too slow", "budget": 0.1}


@every_entry_point
async def test_endpoint_that_finishes_within_the_budget_is_unaffected(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")

    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(0.01)
        return {"answer": 42}

    result = await HangUpClient(guarded_app(entry, work, deadline=0.2)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"answer":42}'
    assert result.context is not None
    assert result.context.cause is None
    assert hangup_records(caplog) == []


async def test_bare_decorator_deadline_answers_504_without_a_ctx_parameter() -> None:
    app = FastAPI()

    @app.get("/work")
    @cancellable(deadline=0.1)
    async def slow() -> dict[str, str]:
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(app).get("/work")

    assert result.status_code == 504
    assert detail_of(result)["detail"].startswith("Deadline exceeded: ")


# -- ctx.deadline and ctx.remaining() --------------------------------------------------------


@every_entry_point
async def test_deadline_is_the_start_plus_the_budget_in_monotonic_seconds(entry: Entry) -> None:
    seen: list[tuple[float | None, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append((ctx.deadline, time.monotonic()))
        return {}

    before = time.monotonic()
    await HangUpClient(guarded_app(entry, work, deadline=0.5)).get("/work")

    ((deadline, inside),) = seen
    assert deadline is not None
    assert before <= deadline - 0.5 <= inside


@every_entry_point
async def test_without_a_budget_deadline_is_none_and_remaining_is_inf(entry: Entry) -> None:
    seen: list[tuple[float | None, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append((ctx.deadline, ctx.remaining()))
        await anyio.sleep(0.01)
        seen.append((ctx.deadline, ctx.remaining()))
        return {}

    await HangUpClient(guarded_app(entry, work)).get("/work")

    assert seen == [(None, math.inf), (None, math.inf)]


@every_entry_point
async def test_remaining_decreases_as_time_passes(entry: Entry) -> None:
    samples: list[float] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        for _ in range(5):
            samples.append(ctx.remaining())
            await anyio.sleep(0.01)
        return {}

    await HangUpClient(guarded_app(entry, work, deadline=1.0)).get("/work")

    assert len(samples) == 5
    assert all(0 < sample <= 1.0 for sample in samples)
    assert all(later < earlier for earlier, later in itertools.pairwise(samples))
    assert samples[0] - samples[-1] >= 0.04  # four sleeps of 10 ms


@every_entry_point
async def test_remaining_matches_the_deadline(entry: Entry) -> None:
    seen: list[tuple[float, float]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        before = time.monotonic()
        remaining = ctx.remaining()
        after = time.monotonic()
        assert ctx.deadline is not None
        seen.append((ctx.deadline - after, remaining))
        seen.append((remaining, ctx.deadline - before))
        return {}

    await HangUpClient(guarded_app(entry, work, deadline=1.0)).get("/work")

    assert all(low <= high for low, high in seen)


@every_entry_point
async def test_remaining_is_zero_not_negative_once_the_budget_is_spent(entry: Entry) -> None:
    seen: list[tuple[float, CancelCause | None]] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():  # outlive the budget without being cancelled
            await anyio.sleep(0.1)
            seen.append((ctx.remaining(), ctx.cause))
        await anyio.sleep(5)  # the cancellation arrives here
        return {}

    result = await HangUpClient(guarded_app(entry, work, deadline=0.05)).get("/work")

    assert seen == [(0.0, CancelCause.DEADLINE_EXCEEDED)]
    assert result.status_code == 504


@every_entry_point
async def test_response_returned_after_the_budget_still_reaches_the_client(entry: Entry) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():  # finish the work although the budget runs out meanwhile
            await anyio.sleep(0.15)
        return {"finished": True}  # no await left for the cancellation to arrive at

    result = await HangUpClient(guarded_app(entry, work, deadline=0.1)).get("/work")

    # The result (200) or a 504 are both honest answers; silence is not: the client waits.
    assert result.complete
    assert result.status_code in (200, 504)


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

    @every_entry_point
    async def test_deadline_on_the_event_loops_clock_answers_504(self, entry: Entry) -> None:
        async def work(ctx: CancelOnDisconnect) -> object:
            await anyio.sleep(60)
            return {}

        result = await HangUpClient(guarded_app(entry, work, deadline=2.0)).get("/work")

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


@pytest.mark.parametrize("entry", ["dependency", "decorator+ctx", "route"])
async def test_deadline_never_cancels_background_tasks_after_the_response(
    entry: Entry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    finished: list[str] = []

    async def background_work() -> None:
        await anyio.sleep(0.2)  # outlives the 0.1 s budget
        finished.append("background task done")

    result = await HangUpClient(app_with_background_task(entry, background_work)).get("/work")

    assert result.status_code == 200
    assert finished == ["background task done"]
    assert hangup_records(caplog) == []


def app_with_background_task(entry: Entry, task: Callable[[], Any]) -> FastAPI:
    """``GET /work`` (0.1 s budget) answers at once and leaves ``task`` to run afterwards."""
    app = FastAPI()

    async def with_dependency(background: BackgroundTasks, ctx: Ctx100ms) -> dict[str, str]:
        background.add_task(task)
        return {}

    async def with_ctx(background: BackgroundTasks, ctx: CancelCtx) -> dict[str, str]:
        background.add_task(task)
        return {}

    if entry == "dependency":
        app.add_api_route("/work", with_dependency, methods=["GET"])
    elif entry == "decorator+ctx":
        app.add_api_route("/work", cancellable(deadline=0.1)(with_ctx), methods=["GET"])
    else:
        router = APIRouter(route_class=cancellable_route(deadline=0.1))
        router.add_api_route("/work", with_ctx, methods=["GET"])
        app.include_router(router)
    return app


# -- The inbound deadline header -------------------------------------------------------------


async def remaining_budget(
    entry: Entry,
    headers: dict[str, str] | None = None,
    raw_headers: list[tuple[bytes, bytes]] | None = None,
    **options: Any,
) -> float | None:
    """The request's ``ctx.remaining()`` as the endpoint returned it (None: no budget)."""

    async def work(ctx: CancelOnDisconnect) -> object:
        remaining = ctx.remaining()
        return {"remaining": None if remaining == math.inf else remaining}

    app: ASGIApp = guarded_app(entry, work, **options)
    if raw_headers:
        app = with_raw_headers(app, raw_headers)
    result = await HangUpClient(app).get("/work", headers=headers)
    assert result.status_code == 200, result.body
    remaining: float | None = detail_of(result)["remaining"]
    return remaining


def with_raw_headers(app: ASGIApp, raw_headers: list[tuple[bytes, bytes]]) -> ASGIApp:
    """``app``, receiving ``raw_headers`` too: repeated names, any case (HangUpClient's
    headers are a mapping, so it cannot send a header twice)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        scope["headers"] = [*raw_headers, *scope["headers"]]
        await app(scope, receive, send)

    return wrapped


@every_entry_point
async def test_deadline_header_shortens_the_budget(entry: Entry) -> None:
    remaining = await remaining_budget(entry, {ENVOY: "1000"}, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


@every_entry_point
async def test_deadline_header_never_extends_the_budget(entry: Entry) -> None:
    remaining = await remaining_budget(entry, {ENVOY: "60000"}, deadline=2.0, deadline_header=True)

    assert remaining is not None
    assert 1.0 < remaining <= 2.0


@every_entry_point
async def test_deadline_header_budget_cancels_the_endpoint_with_504(entry: Entry) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(5)
        return {}

    app = guarded_app(entry, work, deadline=5.0, deadline_header=True)
    result = await HangUpClient(app).get("/work", headers={ENVOY: "100"})

    assert result.status_code == 504
    assert detail_of(result) == {
        "detail": "Deadline exceeded: the request took longer than its 0.1 s budget"
    }
    assert result.elapsed < 1.0


@every_entry_point
async def test_deadline_header_is_ignored_unless_asked_for(entry: Entry) -> None:
    remaining = await remaining_budget(entry, {ENVOY: "200"}, deadline=5.0)

    assert remaining is not None
    assert 4.0 < remaining <= 5.0


@every_entry_point
async def test_custom_deadline_header_name_is_honoured(entry: Entry) -> None:
    remaining = await remaining_budget(
        entry, {"x-budget-ms": "1000"}, deadline=5.0, deadline_header="X-Budget-Ms"
    )

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


@every_entry_point
async def test_custom_deadline_header_name_replaces_envoys(entry: Entry) -> None:
    remaining = await remaining_budget(
        entry, {ENVOY: "200"}, deadline=5.0, deadline_header="x-budget-ms"
    )

    assert remaining is not None
    assert 4.0 < remaining <= 5.0


@every_entry_point
async def test_deadline_header_without_a_route_deadline_is_the_budget(entry: Entry) -> None:
    remaining = await remaining_budget(entry, {ENVOY: "1000"}, deadline_header=True)

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


@every_entry_point
async def test_no_budget_without_a_route_deadline_or_a_header(entry: Entry) -> None:
    assert await remaining_budget(entry, deadline_header=True) is None


@every_entry_point
async def test_malformed_deadline_header_without_a_route_deadline_means_no_budget(
    entry: Entry,
) -> None:
    assert await remaining_budget(entry, {ENVOY: "-5"}, deadline_header=True) is None


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("abc", id="letters"),
    pytest.param("-5", id="negative"),
    pytest.param("+200", id="plus-sign"),
    pytest.param("1.5", id="fraction"),
    pytest.param("1e3", id="exponent"),
    pytest.param("0x10", id="hex"),
    pytest.param("200ms", id="unit"),
    pytest.param("0", id="zero"),
    pytest.param("000", id="zeros"),
    pytest.param("12345678901234567890", id="20-digits"),
    pytest.param("1000000000", id="10-digits"),
    pytest.param("2 00", id="inner-space"),
    pytest.param("   ", id="only-spaces"),
    pytest.param("\t", id="only-tab"),
    pytest.param("\xb2", id="superscript-two"),
]


@every_entry_point
@pytest.mark.parametrize("value", MALFORMED)
async def test_malformed_deadline_header_is_ignored(entry: Entry, value: str) -> None:
    remaining = await remaining_budget(entry, {ENVOY: value}, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 4.0 < remaining <= 5.0  # the route's own budget


@every_entry_point
async def test_deadline_header_with_surrounding_whitespace_counts(entry: Entry) -> None:
    # Optional whitespace around a field value is not part of it (RFC 9110, 5.5); servers
    # strip it before the app sees the header, and so does the parser.
    headers = {ENVOY: " 1000\t"}
    remaining = await remaining_budget(entry, headers, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


@every_entry_point
async def test_largest_accepted_deadline_header_still_never_extends_the_budget(
    entry: Entry,
) -> None:
    remaining = await remaining_budget(
        entry, {ENVOY: "999999999"}, deadline=5.0, deadline_header=True
    )

    assert remaining is not None
    assert 4.0 < remaining <= 5.0


@every_entry_point
@pytest.mark.parametrize(
    "values",
    [
        pytest.param([b"200", b"300"], id="two-values"),
        pytest.param([b"200", b"abc"], id="valid-and-malformed"),
        pytest.param([b"300", b"200", b"300"], id="three-values"),
    ],
)
async def test_repeated_deadline_headers_that_disagree_are_ignored(
    entry: Entry, values: list[bytes]
) -> None:
    raw = [(ENVOY.encode(), value) for value in values]

    remaining = await remaining_budget(entry, raw_headers=raw, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 4.0 < remaining <= 5.0


@every_entry_point
async def test_repeated_deadline_headers_that_agree_count_once(entry: Entry) -> None:
    raw = [(ENVOY.encode(), b"1000"), (ENVOY.encode(), b"1000")]

    remaining = await remaining_budget(entry, raw_headers=raw, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


@every_entry_point
async def test_deadline_header_name_in_the_scope_is_matched_case_insensitively(
    entry: Entry,
) -> None:
    raw = [(ENVOY.title().encode(), b"1000")]

    remaining = await remaining_budget(entry, raw_headers=raw, deadline=5.0, deadline_header=True)

    assert remaining is not None
    assert 0.5 < remaining <= 1.0


# -- Invalid settings fail when the route is defined -----------------------------------------


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
@pytest.mark.parametrize("deadline", [-1.0, 0, 0.0, -math.inf, math.inf, math.nan], ids=repr)
def test_invalid_deadline_fails_at_definition_time(
    define: Callable[..., object], deadline: float
) -> None:
    with pytest.raises(ValueError, match="deadline must be a positive number of seconds"):
        define(deadline=deadline)


@DEFINITIONS
@pytest.mark.parametrize("grace", [-0.1, -math.inf, math.inf, math.nan], ids=repr)
def test_invalid_grace_fails_at_definition_time(
    define: Callable[..., object], grace: float
) -> None:
    with pytest.raises(ValueError, match="grace must be zero or a positive number"):
        define(grace=grace)


@DEFINITIONS
@pytest.mark.parametrize(
    "name", ["x budget", "x-budget:", "x-budget\r\n", "x-bud\x00get", "(budget)", "bügdet"]
)
def test_invalid_deadline_header_name_fails_at_definition_time(
    define: Callable[..., object], name: str
) -> None:
    with pytest.raises(ValueError, match="is not a valid HTTP header name"):
        define(deadline_header=name)


@DEFINITIONS
@pytest.mark.parametrize("timeout", [0, -1.0, math.inf, math.nan], ids=repr)
def test_invalid_callback_timeout_fails_at_definition_time(
    define: Callable[..., object], timeout: float
) -> None:
    with pytest.raises(ValueError, match="callback_timeout must be a positive number"):
        define(callback_timeout=timeout)


@DEFINITIONS
def test_valid_settings_are_accepted_at_definition_time(define: Callable[..., object]) -> None:
    define(deadline=0.1, grace=0.0, deadline_header="x-budget-ms", callback_timeout=0.5)
    define(deadline=1e9, grace=2.5, deadline_header=True)
    define(deadline_header=False)
