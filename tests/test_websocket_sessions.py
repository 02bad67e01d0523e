"""Guarded websocket sessions: a close by the client stops the work in progress."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Annotated, Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import APIRouter, Depends, FastAPI, WebSocket, WebSocketDisconnect
from starlette.types import Message, Send

from fastapi_hangup import (
    CancelCause,
    CancelCtx,
    CancelOnDisconnect,
    StoppedRequest,
    add_cancellation,
    cancel_ctx,
    cancel_ctx_with,
)
from fastapi_hangup.testing import HangUpClient, HangUpWebSocket, WebSocketResult
from tests._asgi import RecordingSend, ScriptedReceive
from tests.test_websocket_routes import websocket_scope

pytestmark = pytest.mark.anyio

GRACEFUL = cancel_ctx_with(grace=5.0)
LONG = 30.0  # seconds of work nobody waits for: only a cancellation ends it early

Session = Callable[[WebSocket, CancelOnDisconnect], Awaitable[None]]


def session_app(session: Session, path: str = "/ws", app: FastAPI | None = None) -> FastAPI:
    """``app`` (or a new one) with a websocket route at ``path`` guarded by ``ctx: CancelCtx``
    that accepts, then awaits ``session(websocket, ctx)``: the part a test writes."""
    if app is None:
        app = FastAPI()

    @app.websocket(path)
    async def endpoint(websocket: WebSocket, ctx: CancelCtx) -> None:
        await websocket.accept()
        await session(websocket, ctx)

    del endpoint
    return app


async def run_until_closed(
    app: FastAPI, path: str = "/ws", *, drop: bool = False
) -> HangUpWebSocket:
    """A session on ``path``: one message, a moment for the endpoint to get to its work,
    then the client's close with 1001 (with ``drop``: the connection lost, 1006)."""
    async with HangUpWebSocket(app, path) as ws:
        await ws.send_text("go")
        await anyio.sleep(0.02)
        if drop:
            await ws.drop()
        else:
            await ws.close(1001)
    return ws


async def serve_scripted(
    app: FastAPI,
    receive: ScriptedReceive,
    send: Send | None = None,
    meanwhile: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run one session of ``app`` at ``/ws`` on a hand-scripted server (at most 5 s), with
    ``meanwhile`` alongside to push what the server receives next."""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            if meanwhile is not None:
                tg.start_soon(meanwhile)
            await app(websocket_scope("/ws"), receive, send or RecordingSend())


def generating_app(events: list[str]) -> FastAPI:
    """A chat endpoint: one prompt, then a long generation that sends a token now and then."""

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        prompt = await websocket.receive_text()
        try:
            for i in range(1000):
                await websocket.send_text(f"{prompt}-{i}")
                await anyio.sleep(LONG / 1000)
        except anyio.get_cancelled_exc_class():
            events.append("cancelled")
            raise
        events.append("finished")

    return session_app(session, "/chat")


def assert_stopped_cleanly(result: WebSocketResult, code: int) -> None:
    assert result.finished
    assert result.context is not None
    assert result.context.is_cancelled
    assert result.context.cause is CancelCause.CLIENT_DISCONNECTED
    assert result.sent_after_close == []
    [record] = result.log_records
    assert record.close_code == code
    assert record.method == "WEBSOCKET"
    assert f"closed by the client ({code})" in record.getMessage()


@pytest.mark.parametrize("code", [1000, 1001])
async def test_a_close_during_the_work_cancels_the_handler(code: int) -> None:
    events: list[str] = []
    async with HangUpWebSocket(generating_app(events), "/chat") as ws:
        await ws.send_text("poem")
        assert await ws.receive_text() == "poem-0"
        await ws.close(code)

    assert events == ["cancelled"]
    assert_stopped_cleanly(ws.result, code)
    assert ws.result.finished_at is not None
    assert ws.result.closed_at is not None
    assert ws.result.finished_at - ws.result.closed_at < LONG / 10


async def test_a_dropped_connection_cancels_the_handler_with_code_1006() -> None:
    events: list[str] = []
    async with HangUpWebSocket(generating_app(events), "/chat") as ws:
        await ws.send_text("poem")
        await ws.receive_text()
        await ws.drop()

    assert events == ["cancelled"]
    assert_stopped_cleanly(ws.result, 1006)


async def test_a_close_while_the_endpoint_waits_for_a_message_is_the_normal_end() -> None:
    seen: list[object] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        try:
            while True:
                await websocket.send_text((await websocket.receive_text()).upper())
        except WebSocketDisconnect as disconnect:
            seen.append(disconnect.code)
            seen.append(ctx.is_cancelled)

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await ws.send_text("a")
        assert await ws.receive_text() == "A"
        await anyio.sleep(0.01)  # the endpoint waits for the next message
        await ws.close(1001)

    assert seen == [1001, False]
    assert ws.result.log_records == []


async def test_every_message_sent_during_the_work_reaches_the_endpoint_once_in_order() -> None:
    got: list[str] = []
    working = anyio.Event()
    go_on = anyio.Event()

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        working.set()
        await go_on.wait()  # the work: the watcher owns receive meanwhile
        while not got or got[-1] != "last":
            got.append(await websocket.receive_text())
        await websocket.send_text(str(len(got)))

    sent = [f"m{i}" for i in range(50)] + ["last"]
    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await ws.send_text("start")
        await working.wait()
        for text in sent:
            await ws.send_text(text)
        await anyio.sleep(0.01)
        go_on.set()
        assert await ws.receive_text() == str(len(sent))

    assert got == sent
    assert ws.result.log_records == []


async def test_the_watcher_is_the_only_reader_and_holds_at_most_one_message() -> None:
    got: list[str] = []
    done = anyio.Event()

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await anyio.sleep(0.05)  # working while three messages are pending
        for _ in range(3):
            got.append(await websocket.receive_text())
        done.set()
        with pytest.raises(WebSocketDisconnect):
            await websocket.receive_text()

    receive = ScriptedReceive([{"type": "websocket.connect"}])
    receive.push(*({"type": "websocket.receive", "text": t} for t in "abc"))

    async def close_when_done() -> None:
        await done.wait()
        receive.push({"type": "websocket.disconnect", "code": 1000})

    await serve_scripted(session_app(session), receive, meanwhile=close_when_done)

    assert got == ["a", "b", "c"]
    assert receive.max_waiting == 1
    # Taken one at a time: while the endpoint worked the watcher had read one message only.
    assert receive.calls == 5


async def test_a_work_block_is_cancelled_and_the_session_sees_the_close_next() -> None:
    events: list[object] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        try:
            while True:
                prompt = await websocket.receive_text()
                with ctx.work() as work:
                    for i in range(1000):
                        await websocket.send_text(f"{prompt}-{i}")
                        await anyio.sleep(LONG / 1000)
                events.append(("after the block", work.cancelled))
        except WebSocketDisconnect as disconnect:
            events.append(("disconnect", disconnect.code))

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await ws.send_text("poem")
        await ws.receive_text()
        await ws.close(1001)

    assert events == [("after the block", True), ("disconnect", 1001)]
    assert_stopped_cleanly(ws.result, 1001)


async def test_one_generation_can_be_stopped_while_the_session_goes_on() -> None:
    answers: list[bool] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        async for prompt in websocket.iter_text():
            with ctx.work() as work:
                if prompt == "stop me":
                    work.cancel()
                await anyio.lowlevel.checkpoint()
            answers.append(work.cancelled)
            await websocket.send_text("done")

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        for prompt in ("stop me", "hello"):
            await ws.send_text(prompt)
            assert await ws.receive_text() == "done"

    assert answers == [True, False]
    assert ws.result.log_records == []  # stopping your own work is no hang-up


async def test_a_work_block_entered_after_the_close_is_cancelled_at_once() -> None:
    events: list[object] = []
    closed = anyio.Event()

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        with ctx.work():
            await closed.wait()
            await anyio.sleep(0.01)  # the watcher has read the close meanwhile
        with ctx.work() as second:
            await anyio.sleep(LONG)
        events.append(second.cancelled)

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await ws.send_text("go")
        await anyio.sleep(0.01)
        await ws.close(1001, wait=False)
        closed.set()
        await ws.close(1001)

    assert events == [True]
    assert len(ws.result.log_records) == 1


async def test_nothing_is_sent_after_the_close() -> None:
    raised: list[object] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        try:
            await anyio.sleep(LONG)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await websocket.send_text("goodbye")
                except WebSocketDisconnect as disconnect:
                    raised.append(disconnect.code)
                await websocket.close()  # dropped: the socket is closed already

    ws = await run_until_closed(session_app(session))

    assert raised == [1001]
    assert [m["type"] for m in ws.result.messages] == ["websocket.accept"]
    assert_stopped_cleanly(ws.result, 1001)


async def test_the_servers_own_close_after_a_normal_end_is_no_hang_up() -> None:
    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()
        await anyio.sleep(0.02)  # the client's close comes in now
        assert not ctx.is_cancelled

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"
        with pytest.raises(WebSocketDisconnect):
            await ws.receive()
        await ws.close(1000)

    assert ws.result.log_records == []
    assert ws.result.context is not None
    assert not ws.result.context.is_cancelled


async def test_on_cancel_callbacks_run_and_the_hook_gets_the_close_code() -> None:
    app = FastAPI()
    stopped: list[StoppedRequest] = []
    add_cancellation(app, on_stop=stopped.append)
    ran: list[str] = []

    @app.websocket("/ws/{room}")
    async def endpoint(websocket: WebSocket, room: str, ctx: CancelCtx) -> None:
        ctx.on_cancel(lambda: ran.append(room))
        await websocket.accept()
        await websocket.receive_text()
        await anyio.sleep(LONG)

    await run_until_closed(app, "/ws/lobby", drop=True)

    assert ran == ["lobby"]
    [stop] = stopped
    assert (stop.method, stop.route, stop.path) == ("WEBSOCKET", "/ws/{room}", "/ws/lobby")
    assert (stop.close_code, stop.status_code, stop.cause) == (
        1006,
        None,
        CancelCause.CLIENT_DISCONNECTED,
    )
    assert stop.latency_seconds is not None
    assert stop.latency_seconds < LONG / 10


async def test_a_shield_holds_off_the_close() -> None:
    events: list[str] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        with ctx.shield():
            await anyio.sleep(0.05)
            events.append("shielded block done")
        await anyio.sleep(LONG)

    ws = await run_until_closed(session_app(session))

    assert events == ["shielded block done"]
    assert_stopped_cleanly(ws.result, 1001)


# Which websocket routes are guarded.


def sleeping_endpoint(app: FastAPI | APIRouter, events: list[str], path: str = "/ws") -> None:
    @app.websocket(path)
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        with anyio.move_on_after(0.1) as scope:
            await anyio.sleep(LONG)
        events.append("timed out" if scope.cancelled_caught else "?")

    del endpoint


async def test_an_app_wide_cancel_ctx_leaves_websocket_routes_alone() -> None:
    app = FastAPI(dependencies=[Depends(cancel_ctx)])
    events: list[str] = []
    sleeping_endpoint(app, events)

    ws = await run_until_closed(app)

    assert events == ["timed out"]
    assert ws.result.context is None


async def test_an_app_wide_dependency_asked_for_websockets_guards_them() -> None:
    app = FastAPI(dependencies=[Depends(cancel_ctx_with(websockets=True))])
    events: list[str] = []
    sleeping_endpoint(app, events)

    ws = await run_until_closed(app)

    assert events == []
    assert_stopped_cleanly(ws.result, 1001)


async def test_add_cancellation_leaves_websocket_routes_alone_unless_asked() -> None:
    app = FastAPI()
    add_cancellation(app)
    events: list[str] = []
    sleeping_endpoint(app, events)

    ws = await run_until_closed(app)

    assert events == ["timed out"]
    assert ws.result.context is None


async def test_add_cancellation_with_websockets_guards_every_websocket_route() -> None:
    app = FastAPI()
    add_cancellation(app, websockets=True)
    events: list[str] = []
    router = APIRouter(prefix="/r")
    sleeping_endpoint(router, events)
    app.include_router(router)
    sleeping_endpoint(app, events, "/late")  # added after add_cancellation

    first = await run_until_closed(app, "/r/ws")
    second = await run_until_closed(app, "/late")

    assert events == []
    assert_stopped_cleanly(first.result, 1001)
    assert_stopped_cleanly(second.result, 1001)


async def test_add_cancellation_with_websockets_still_serves_http_and_websockets() -> None:
    app = FastAPI()
    add_cancellation(app, websockets=True)

    @app.get("/")
    async def index() -> dict[str, str]:
        return {"ok": "yes"}

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    session_app(session, "/echo", app)
    result = await HangUpClient(app).get("/")
    async with HangUpWebSocket(app, "/echo") as ws:
        await ws.send_text("hi")
        assert await ws.receive_text() == "hi"

    assert result.status_code == 200
    assert ws.result.log_records == []


async def test_work_on_an_http_route_says_what_to_do() -> None:
    app = FastAPI()

    @app.get("/")
    async def index(ctx: CancelCtx) -> str:
        try:
            with ctx.work():
                pass
        except RuntimeError as error:
            return str(error)
        return "no error"

    result = await HangUpClient(app).get("/")

    assert "websocket session" in result.body.decode()


async def test_a_server_shutting_down_cancels_the_session_from_outside() -> None:
    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await anyio.sleep(LONG)

    app = session_app(session)

    receive = ScriptedReceive([{"type": "websocket.connect"}])
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logger = logging.getLogger("fastapi_hangup")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with anyio.move_on_after(0.05) as shutdown:
            await app(websocket_scope("/ws"), receive, RecordingSend())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    assert shutdown.cancelled_caught  # the cancellation went on out of the app
    [record] = records
    assert getattr(record, "cause", None) == "server_shutdown"
    assert getattr(record, "close_code", 0) is None


class _Disconnected(Exception):
    """What autobahn (daphne) raises on a send to a closed connection: no OSError."""


@pytest.mark.parametrize(
    "refusal",
    [
        # uvicorn, on a connection that is closing; it reports the close a while later.
        OSError("the connection is closing"),
        # daphne: its disconnect is queued for the app, but the send fails before it is read.
        _Disconnected("Attempt to send on a closed protocol"),
    ],
    ids=["OSError", "other error"],
)
async def test_a_send_the_server_refuses_is_the_close_and_the_next_receive_reports_it(
    refusal: Exception,
) -> None:
    events: list[object] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        try:
            with ctx.work() as work:
                await websocket.send_text("token")
                await anyio.sleep(LONG)
            events.append(work.cancelled)
            await websocket.receive_text()
        except WebSocketDisconnect as disconnect:
            events.append(disconnect.code)

    receive = ScriptedReceive(
        [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    )
    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            receive.push({"type": "websocket.disconnect", "code": 1006})
            raise refusal
        sent.append(message)

    await serve_scripted(session_app(session), receive, send)

    assert events == [True, 1006]
    assert [m["type"] for m in sent] == ["websocket.accept"]


async def test_a_send_failing_with_another_error_and_no_close_raises_that_error() -> None:
    seen: list[str] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        await websocket.receive_text()
        with ctx.work():
            try:
                await websocket.send_text("token")
            except _Disconnected as error:
                seen.append(str(error))

    receive = ScriptedReceive(
        [{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}]
    )

    async def send(message: Message) -> None:
        if message["type"] == "websocket.send":
            raise _Disconnected("the server's own failure")

    await serve_scripted(session_app(session), receive, send)

    assert seen == ["the server's own failure"]


async def test_a_grace_period_lets_the_work_stop_by_itself_first() -> None:
    app = FastAPI()
    events: list[str] = []

    @app.websocket("/ws")
    async def endpoint(
        websocket: WebSocket, ctx: Annotated[CancelOnDisconnect, Depends(GRACEFUL)]
    ) -> None:
        await websocket.accept()
        await websocket.receive_text()
        with ctx.work() as work:
            for _ in range(1000):
                if ctx.is_cancelled:  # a safe point: stop here, before the cancellation
                    events.append("stopped at a safe point")
                    break
                await anyio.sleep(LONG / 1000)
        events.append(f"block cancelled: {work.cancelled}")

    ws = await run_until_closed(app)

    assert events == ["stopped at a safe point", "block cancelled: True"]
    assert_stopped_cleanly(ws.result, 1001)


async def test_a_failing_server_receive_reaches_the_endpoints_next_receive() -> None:
    seen: list[str] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        try:
            await websocket.receive_text()
        except OSError as error:
            seen.append(str(error))

    receive = ScriptedReceive([{"type": "websocket.connect"}])

    async def fail_soon() -> None:
        await anyio.sleep(0.01)
        receive.fail(OSError("the server's receive broke"))

    await serve_scripted(session_app(session), receive, meanwhile=fail_soon)

    assert seen == ["the server's receive broke"]


async def test_a_session_guarded_twice_has_one_guard() -> None:
    app = FastAPI(dependencies=[Depends(cancel_ctx_with(websockets=True))])
    add_cancellation(app, websockets=True)
    contexts: list[object] = []

    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        contexts.append(ctx)
        await websocket.receive_text()
        await anyio.sleep(LONG)

    ws = await run_until_closed(session_app(session, app=app))

    assert contexts == [ws.result.context]
    assert_stopped_cleanly(ws.result, 1001)


def test_cancellable_on_a_websocket_endpoint_fails_with_what_to_do() -> None:
    from fastapi_hangup import cancellable

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()

    with pytest.raises(TypeError, match="ctx: CancelCtx"):
        cancellable(endpoint)


@pytest.mark.parametrize("entry", ["parameter", "add_cancellation"])
async def test_an_error_of_the_handler_goes_on_as_without_the_guard(entry: str) -> None:
    app = FastAPI()
    if entry == "add_cancellation":
        add_cancellation(app, websockets=True)

    async def boom(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise ValueError("boom")

    if entry == "parameter":

        @app.websocket("/ws")
        async def with_ctx(websocket: WebSocket, ctx: CancelCtx) -> None:
            await boom(websocket)
    else:
        app.add_api_websocket_route("/ws", boom)

    async def talk() -> None:
        async with HangUpWebSocket(app, "/ws") as ws:
            await ws.send_text("go")
            await anyio.sleep(0.01)

    with pytest.raises(ValueError, match="boom"):
        await talk()


async def test_a_reader_and_a_writer_task_end_quietly_on_the_close() -> None:
    async def session(websocket: WebSocket, ctx: CancelOnDisconnect) -> None:
        async def writer() -> None:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.05)  # the close comes meanwhile
                await websocket.send_text("late")  # raises WebSocketDisconnect

        async with anyio.create_task_group() as tg:
            tg.start_soon(writer)
            await websocket.receive_text()  # raises WebSocketDisconnect too

    async with HangUpWebSocket(session_app(session), "/ws") as ws:
        await anyio.sleep(0.01)
        await ws.close(1001)

    assert ws.error is None
    assert ws.result.sent_after_close == []
    assert ws.result.log_records == []  # the handler waited for a message: a normal end


async def holder(ctx: CancelCtx) -> AsyncIterator[None]:
    async with anyio.create_task_group():  # a cancel scope inside the guard's, across yield
        yield


async def test_a_yield_dependency_holding_a_scope_inside_the_guard_keeps_them_nested() -> None:
    app = FastAPI()

    @app.websocket("/ws")
    async def endpoint(
        websocket: WebSocket, ctx: CancelCtx, _: Annotated[None, Depends(holder)]
    ) -> None:
        await websocket.accept()
        await websocket.receive_text()
        await anyio.sleep(LONG)

    ws = await run_until_closed(app)

    assert_stopped_cleanly(ws.result, 1001)
