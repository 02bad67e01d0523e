"""A hang-up mid-request, through every entry point: prompt, clean, quiet, shield means shield.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
classes do not live.
"""

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel
from starlette.types import Message

from fastapi_hangup import CancelOnDisconnect, ClientDisconnected, _backend
from fastapi_hangup._backend import ARM_DELAY
from fastapi_hangup.testing import HangUpClient
from tests._asgi import RecordingSend, ScriptedReceive, body_messages, http_scope, running_tasks
from tests._context_apps import EntryPoint, app_with, only_on
from tests._helpers import eventually, hang_up_records

pytestmark = pytest.mark.anyio

Mode = Literal["once", "repeat"]
MODES = pytest.mark.parametrize("disconnect", ["once", "repeat"])


def sleeper_app(entry: EntryPoint, started: anyio.Event) -> FastAPI:
    """``GET /items/{item_id}`` sets ``started`` and then sleeps for 5 s."""
    router = entry.router()

    @router.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        started.set()
        await anyio.sleep(5)
        return {"item_id": item_id}

    return app_with(router)


# -- Prompt and clean ------------------------------------------------------------------------


@MODES
async def test_hang_up_mid_work_cancels_at_the_next_await_and_runs_finally(
    entry: EntryPoint, disconnect: Mode
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

    client = HangUpClient(entry.app(work), disconnect=disconnect)
    result = await client.get("/work", hang_up_on=started)

    assert steps == ["finally, is_cancelled=True"]
    assert result.hung_up
    assert result.cancelled
    assert result.hung_up_at is not None
    assert cancelled_at[0] - result.hung_up_at < 1.0  # milliseconds in practice


async def test_hang_up_ends_the_request_quietly_sending_nothing(entry: EntryPoint) -> None:
    started = anyio.Event()

    # An exception escaping the app would propagate out of get() (a cancellation exception
    # is turned into an AssertionError by the client).
    result = await HangUpClient(sleeper_app(entry, started)).get("/items/7", hang_up_on=started)

    assert result.messages == []
    assert result.sent_after_hang_up == []
    assert result.elapsed < 3.0


async def test_hang_up_logs_one_499_record_with_method_and_route(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()

    await HangUpClient(sleeper_app(entry, started)).get("/items/7", hang_up_on=started)

    (record,) = hang_up_records(caplog)
    assert record.levelno == logging.INFO
    assert "GET /items/{item_id} 499 Client Closed Request" in record.getMessage()
    assert record.__dict__["status_code"] == 499
    assert record.__dict__["method"] == "GET"
    assert record.__dict__["route"] == "/items/{item_id}"
    assert record.__dict__["work_ms"] >= 0
    assert record.__dict__["path"] == "/items/7"
    assert record.__dict__["latency_ms"] >= 0


@only_on(
    "dependency",
    "decorator",
    "decorator+ctx",
    reason="the route class ends a hung-up request below the exception handlers: it raises "
    "no ClientDisconnected, so no handler is asked (docs/cancellation.md says nothing of it)",
)
async def test_a_users_own_client_disconnected_handler_is_kept(entry: EntryPoint) -> None:
    started = anyio.Event()
    handled: list[ClientDisconnected] = []
    app = sleeper_app(entry, started)

    @app.exception_handler(ClientDisconnected)
    async def count_hang_ups(request: Request, exc: ClientDisconnected) -> None:
        handled.append(exc)

    result = await HangUpClient(app).get("/items/7", hang_up_on=started)

    assert len(handled) == 1
    assert isinstance(handled[0], ClientDisconnected)
    assert result.messages == []


async def test_hang_up_under_an_http_middleware_ends_quietly(entry: EntryPoint) -> None:
    started = anyio.Event()
    app = sleeper_app(entry, started)

    @app.middleware("http")
    async def passthrough(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await call_next(request)

    pending = body_messages([])
    delivered_disconnect = False

    async def receive() -> Message:  # hangs up once the endpoint has started
        nonlocal delivered_disconnect
        if pending:
            return pending.pop(0)
        await started.wait()
        if delivered_disconnect:
            await anyio.sleep_forever()
        delivered_disconnect = True
        return {"type": "http.disconnect"}

    send = RecordingSend()
    with anyio.fail_after(5):
        await app(http_scope("GET", "/items/7"), receive, send)  # must not raise

    # call_next() needs a response, so the middleware gets an empty 499 nobody reads.
    starts = [m for m in send.messages if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [499]


async def test_hang_up_while_the_endpoint_reads_the_body_ends_quietly(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    got: list[bytes] = []
    receive = ScriptedReceive([{"type": "http.request", "body": b"first", "more_body": True}])
    router = entry.router()

    @router.post("/upload")
    async def upload(request: Request) -> None:
        async for chunk in request.stream():
            got.append(chunk)
            receive.push({"type": "http.disconnect"})  # the client goes half-way through

    send = RecordingSend()
    with anyio.fail_after(5):
        await app_with(router)(http_scope("POST", "/upload"), receive, send)  # must not raise

    assert got == [b"first"]
    assert send.messages == []
    assert len(hang_up_records(caplog)) == 1


class Order(BaseModel):
    item: str


@MODES
async def test_hang_up_after_a_body_parameter_consumed_the_body_is_noticed(
    entry: EntryPoint, disconnect: Mode
) -> None:
    started = anyio.Event()
    router = entry.router()

    @router.post("/orders")
    async def create(order: Order) -> Order:
        started.set()
        await anyio.sleep(5)
        return order

    body = Order(item="book").model_dump_json().encode()
    result = await HangUpClient(app_with(router), disconnect=disconnect).post(
        "/orders",
        body=[body[i : i + 4] for i in range(0, len(body), 4)],
        headers={"content-type": "application/json"},
        hang_up_on=started,
    )

    assert result.cancelled
    assert result.messages == []


@pytest.mark.parametrize("read_body_first", [True, False], ids=["body-read", "body-unread"])
@MODES
async def test_is_disconnected_is_true_after_a_hang_up_inside_a_shield(
    entry: EntryPoint, read_body_first: bool, disconnect: Mode
) -> None:
    started = anyio.Event()
    answers: list[bool] = []
    router = entry.router()

    @router.api_route("/probe", methods=["GET", "POST"])
    async def probe(request: Request, ctx: CancelOnDisconnect) -> None:
        if read_body_first:
            await request.body()
        with ctx.shield():
            answers.append(await request.is_disconnected())
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
            answers.append(await request.is_disconnected())
        await anyio.sleep(5)

    client = HangUpClient(app_with(router), disconnect=disconnect)
    if read_body_first:
        result = await client.post("/probe", body=b"payload", hang_up_on=started)
    else:  # a GET: its only message, an empty body, is never read
        result = await client.get("/probe", hang_up_on=started)

    assert result.cancelled
    assert answers == [False, True]


@pytest.mark.parametrize("hang_up", [True, False], ids=["hung-up", "completed"])
async def test_no_watcher_task_outlives_the_request(entry: EntryPoint, hang_up: bool) -> None:
    started = anyio.Event()
    during: set[object] = set()

    async def work(ctx: CancelOnDisconnect) -> object:
        # The watcher starts ARM_DELAY after the work (asyncio: a timer, which fires before
        # this longer one) or at its first wait (trio), and is running by now.
        await anyio.sleep(ARM_DELAY * 10)
        await anyio.wait_all_tasks_blocked()
        during.update(running_tasks())
        started.set()
        if hang_up:
            await anyio.sleep(5)
        return {}

    before = running_tasks()
    result = await HangUpClient(entry.app(work)).get(
        "/work", hang_up_on=started if hang_up else None
    )
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    after = running_tasks()

    assert result.cancelled is hang_up
    assert during - before  # the watcher (and the client's helper task) existed meanwhile
    assert not (during - before) & after
    assert after <= before


async def test_work_that_ends_within_the_arming_delay_starts_no_watcher(
    entry: EntryPoint, anyio_backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvloop counts timers from the start of the loop's iteration, so a 1 ms timer can fire
    # at once: a longer delay makes "within" certain.
    monkeypatch.setattr(_backend, "ARM_DELAY", 0.5)
    during: set[object] = set()

    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.lowlevel.checkpoint()  # gives the loop control, for far less than 1 ms
        await anyio.lowlevel.checkpoint()
        during.update(running_tasks())
        return {}

    before = running_tasks()
    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    # asyncio names the task by its coroutine, trio by the system task's function.
    watchers = {t for t in during - before if re.search(r"_watch|_TrioTask", repr(t))}
    # asyncio arms the watcher with a timer; trio, which has none outside tasks, at once.
    assert bool(watchers) is (anyio_backend_name == "trio")


# -- Shield means shield ---------------------------------------------------------------------


async def test_shielded_block_runs_to_completion_and_cancellation_follows_it(
    entry: EntryPoint,
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def pay(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
            await anyio.sleep(0.05)  # an await after the hang-up, still shielded
            steps.append(f"charged, is_cancelled={ctx.is_cancelled}")
        steps.append("after the block")  # no await yet: still runs
        await anyio.sleep(5)
        steps.append("unreachable")
        return {"paid": True}

    result = await HangUpClient(entry.app(pay)).get("/work", hang_up_on=started)

    assert steps == ["charged, is_cancelled=True", "after the block"]
    assert result.messages == []
    assert result.elapsed < 3.0


async def test_endpoint_returning_right_after_a_shield_sends_nothing(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    written: list[str] = []

    async def pay(ctx: CancelOnDisconnect) -> object:
        with ctx.shield():
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
            await anyio.sleep(0.01)  # the write goes on after the hang-up
            written.append("row")
        return {"paid": True}  # no await after the block: nobody to send this to

    result = await HangUpClient(entry.app(pay)).get("/work", hang_up_on=started)

    assert written == ["row"]
    assert result.cancelled
    assert result.messages == []
    assert len(hang_up_records(caplog)) == 1


# -- Not a hang-up: the application cancelling the context's scope itself ---------------------


async def test_application_cancelling_ctx_scope_gets_a_runtime_error_saying_so(
    entry: EntryPoint,
) -> None:
    async def self_cancel(ctx: CancelOnDisconnect) -> object:
        ctx.scope.cancel()
        await anyio.sleep(5)
        return {}

    app = entry.app(self_cancel)
    with anyio.fail_after(5), pytest.raises(RuntimeError, match="not by a hang-up") as err:
        await app(http_scope("GET", "/work"), ScriptedReceive(body_messages([])), RecordingSend())

    assert "cancelled by the application" in str(err.value)
