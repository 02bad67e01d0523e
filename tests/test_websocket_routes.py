"""Websocket routes that did not ask: an app-wide ``Depends(cancel_ctx)`` steps aside there."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from fastapi import Depends, FastAPI, WebSocket

from fastapi_hangup import CancelCtx, cancel_ctx
from tests._asgi import RecordingSend, ScriptedReceive, http_scope

pytestmark = pytest.mark.anyio


def websocket_scope(path: str) -> dict[str, Any]:
    scope = {**http_scope("GET", path), "type": "websocket", "scheme": "ws", "subprotocols": []}
    del scope["method"]
    return scope


async def talk(app: FastAPI, text: str) -> RecordingSend:
    receive = ScriptedReceive(
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": text},
            {"type": "websocket.disconnect", "code": 1000},
        ]
    )
    send = RecordingSend()
    with anyio.fail_after(5):
        await app(websocket_scope("/ws"), receive, send)
    return send


async def test_app_wide_dependency_leaves_websocket_routes_working() -> None:
    app = FastAPI(dependencies=[Depends(cancel_ctx)])

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text((await websocket.receive_text()).upper())
        await websocket.close()

    send = await talk(app, "hello")

    assert [m["type"] for m in send.messages] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert send.messages[1]["text"] == "HELLO"


async def test_a_context_an_app_wide_dependency_got_is_never_cancelled_and_says_why() -> None:
    seen: list[object] = []

    async def audit(ctx: CancelCtx) -> None:  # meant for the HTTP routes
        seen.append(ctx.is_cancelled)
        try:
            _ = ctx.scope
        except RuntimeError as error:
            seen.append(str(error))

    app = FastAPI(dependencies=[Depends(audit)])

    @app.websocket("/ws")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    await talk(app, "hello")

    assert seen[0] is False
    assert isinstance(seen[1], str)
    assert "websocket route" in seen[1]
    assert "ctx: CancelCtx" in seen[1]  # how to ask for a guarded session
