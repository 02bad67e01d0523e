"""The websocket app the real servers run: a guarded chat that records what happened.

Served as ``tests.e2e.websocket_app:app``. A session's id comes as ``?rid=``; the session
records its events through :func:`record` (see ``_events.py``), and the ``on_stop`` hook records
what fastapi-hangup reported (``stopped``, with the close code), so the test reads both from its
own process. The client's first message chooses what the session does:

- ``generate``: one long generation in ``with ctx.work():`` that sends a token every 20 ms for
  30 s, unless the client goes;
- ``hold N``: work for 0.5 s without reading, then read exactly ``N`` messages (those the client
  sent meanwhile) and answer with them, joined by spaces: the lossless check;
- anything else is echoed, until the client closes.
"""

from __future__ import annotations

import anyio
from fastapi import WebSocket, WebSocketDisconnect

from fastapi_hangup import CancelCtx, StoppedRequest, add_cancellation

from ._app_kit import log_to_stderr, make_app
from ._events import record

TOKEN_EVERY = 0.02
GENERATION = 30.0


def _stopped(stop: StoppedRequest) -> None:
    record(
        stop.request_id or "-",
        "stopped",
        close_code=stop.close_code,
        cause=stop.cause.value,
        latency=stop.latency_seconds,
        method=stop.method,
    )


app = make_app()
add_cancellation(app, on_stop=_stopped)


@app.websocket("/ws")
async def chat(websocket: WebSocket, rid: str, ctx: CancelCtx) -> None:
    log_to_stderr()
    await websocket.accept()
    try:
        first = await websocket.receive_text()
        record(rid, "first", text=first)
        if first == "generate":
            await _generate(websocket, rid, ctx)
        elif first.startswith("hold "):
            await _hold(websocket, rid, ctx, int(first.split()[1]))
        else:
            await websocket.send_text(first)
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as disconnect:
        record(rid, "disconnect", code=disconnect.code)


async def _generate(websocket: WebSocket, rid: str, ctx: CancelCtx) -> None:
    with ctx.work() as generation:
        record(rid, "start")
        try:
            for i in range(round(GENERATION / TOKEN_EVERY)):
                await websocket.send_text(f"token-{i}")
                await anyio.sleep(TOKEN_EVERY)
        except anyio.get_cancelled_exc_class():
            record(rid, "cancelled")
            raise
    record(rid, "after", cancelled=generation.cancelled)


async def _hold(websocket: WebSocket, rid: str, ctx: CancelCtx, count: int) -> None:
    with ctx.work():
        await anyio.sleep(0.5)  # the client sends its messages now; the watcher reads them
    got = [await websocket.receive_text() for _ in range(count)]
    record(rid, "held", count=len(got))
    await websocket.send_text(" ".join(got))
