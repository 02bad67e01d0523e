"""The test kit itself: how HangUpClient hangs up, and what the assertions say."""

from __future__ import annotations

import math

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from fastapi_hangup import CancelCause, CancelCtx, cancellable
from fastapi_hangup.testing import HangUpClient, assert_cancelled, assert_not_cancelled

pytestmark = pytest.mark.anyio


def slow_app() -> FastAPI:
    app = FastAPI()

    @app.get("/slow")
    async def slow(ctx: CancelCtx, seconds: float = 30) -> dict[str, bool]:
        await anyio.sleep(seconds)
        return {"ok": True}

    @app.get("/deadline")
    @cancellable(deadline=0.05)
    async def deadline() -> None:
        await anyio.sleep(30)

    @app.get("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    return app


async def record_receives(mode: str) -> list[Message]:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())  # the body
        seen.append(await receive())  # the disconnect
        with anyio.move_on_after(0.1):
            seen.append(await receive())  # "repeat" answers again, "once" blocks

    await HangUpClient(app, disconnect=mode).get("/", hang_up_after=0.01)  # type: ignore[arg-type]
    return seen


async def test_once_mode_delivers_the_disconnect_a_single_time() -> None:
    seen = await record_receives("once")
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]


async def test_repeat_mode_delivers_the_disconnect_to_every_call() -> None:
    seen = await record_receives("repeat")
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect", "http.disconnect"]


async def test_hang_up_after_start_cancels_the_guarded_work() -> None:
    result = await HangUpClient(slow_app()).get("/slow", hang_up_after_start=0)
    assert result.hung_up
    assert result.cause is CancelCause.CLIENT_DISCONNECTED
    assert result.elapsed < 5


async def test_hang_up_on_an_event() -> None:
    event = anyio.Event()
    app = slow_app()
    result_holder: list[object] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result_holder.append(await HangUpClient(app).get("/slow", hang_up_on=event))

        tg.start_soon(run)
        await anyio.sleep(0.05)
        event.set()
    (result,) = result_holder
    assert_cancelled(result)  # type: ignore[arg-type]


async def test_a_client_that_stays_gets_the_whole_response() -> None:
    result = await HangUpClient(slow_app()).get("/slow?seconds=0.01")
    assert not result.hung_up
    assert result.complete
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/json"
    assert result.body == b'{"ok":true}'
    assert_not_cancelled(result)


async def test_unguarded_route_has_no_context() -> None:
    result = await HangUpClient(slow_app()).get("/plain")
    assert result.context is None
    assert result.cause is None
    with pytest.raises(AssertionError, match="no cancellation context"):
        assert_cancelled(result)


async def test_assert_cancelled_names_the_wrong_cause() -> None:
    result = await HangUpClient(slow_app()).get("/deadline")
    assert_cancelled(result, CancelCause.DEADLINE_EXCEEDED)
    with pytest.raises(AssertionError, match="CLIENT_DISCONNECTED"):
        assert_cancelled(result)


async def test_assert_not_cancelled_says_why_it_was() -> None:
    result = await HangUpClient(slow_app()).get("/slow", hang_up_after=0.02)
    with pytest.raises(AssertionError, match="CLIENT_DISCONNECTED"):
        assert_not_cancelled(result)


async def test_a_send_after_the_hang_up_is_reported() -> None:
    async def rude_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # the disconnect
        await send({"type": "http.response.start", "status": 200, "headers": []})

    result = await HangUpClient(rude_app).get("/", hang_up_after=0.01)
    assert [m["type"] for m in result.sent_after_hang_up] == ["http.response.start"]


async def test_a_send_before_the_app_reads_the_hang_up_is_no_fault() -> None:
    # The race of a stream's next chunk with the watcher that reads the disconnect.
    async def unaware_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()  # the body
        await anyio.sleep(0.05)  # the client hangs up meanwhile; the app never asks
        await send({"type": "http.response.start", "status": 200, "headers": []})

    result = await HangUpClient(unaware_app).get("/", hang_up_after=0.01)
    assert result.hung_up
    assert result.sent_after_hang_up == []


async def test_an_escaping_cancellation_fails_loudly() -> None:
    async def leaky_app(scope: Scope, receive: Receive, send: Send) -> None:
        caught: BaseException | None = None
        with anyio.CancelScope() as cancelled:
            cancelled.cancel()
            try:
                await anyio.sleep(math.inf)
            except anyio.get_cancelled_exc_class() as exc:
                caught = exc  # let the cancellation out of its own scope, as a buggy app would
        assert caught is not None
        raise caught

    with pytest.raises(AssertionError, match="escaped the ASGI app"):
        await HangUpClient(leaky_app).get("/")


async def test_an_app_error_propagates_as_itself() -> None:
    async def broken_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await HangUpClient(broken_app).get("/")


async def test_body_chunks_arrive_as_separate_messages() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(3):
            seen.append(await receive())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await HangUpClient(app).post("/", body=[b"a", b"b", b"c"])
    assert [(m["body"], m["more_body"]) for m in seen] == [
        (b"a", True),
        (b"b", True),
        (b"c", False),
    ]
