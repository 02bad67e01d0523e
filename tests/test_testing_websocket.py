"""``HangUpWebSocket``: the test kit's websocket client, on its own."""

from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from fastapi_hangup.testing import HangUpWebSocket

pytestmark = pytest.mark.anyio


def echo_app(sends_after_close: bool = False) -> FastAPI:
    app = FastAPI()

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:  # not guarded
        await websocket.accept()
        try:
            while True:
                data = await websocket.receive_json()
                await websocket.send_json({"echo": data})
        except WebSocketDisconnect:
            if sends_after_close:
                await websocket.send_text("too late")

    @app.websocket("/refuse")
    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(code=1008)

    @app.websocket("/broken")
    async def broken(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.receive_text()
        raise ValueError("boom")

    return app


async def test_it_talks_json_and_closes_with_1000_when_the_test_does_not() -> None:
    async with HangUpWebSocket(echo_app(), "/echo") as ws:
        await ws.send_json({"n": 1})
        assert await ws.receive_json() == {"echo": {"n": 1}}

    assert ws.result.close_code == 1000
    assert ws.result.finished
    assert [m["type"] for m in ws.result.received] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    ]
    assert ws.result.context is None  # the route is not guarded


async def test_a_refused_handshake_shows_as_a_close_with_its_code() -> None:
    async with HangUpWebSocket(echo_app(), "/refuse") as ws:
        with pytest.raises(WebSocketDisconnect) as refused:
            await ws.receive()

    assert refused.value.code == 1008


async def test_what_the_app_sends_after_the_close_is_recorded() -> None:
    async with HangUpWebSocket(echo_app(sends_after_close=True), "/echo") as ws:
        await ws.drop()

    assert ws.result.close_code == 1006
    assert [m.get("text") for m in ws.result.sent_after_close] == ["too late"]


async def test_an_error_that_escapes_the_app_is_raised_on_leaving() -> None:
    async def talk() -> None:
        async with HangUpWebSocket(echo_app(), "/broken") as ws:
            await ws.send_text("go")
            await anyio.sleep(0.01)

    with pytest.raises(ValueError, match="boom"):
        await talk()


async def test_the_client_cannot_send_after_it_closed() -> None:
    async with HangUpWebSocket(echo_app(), "/echo") as ws:
        await ws.close()
        with pytest.raises(RuntimeError, match="closed"):
            await ws.send_text("x")
