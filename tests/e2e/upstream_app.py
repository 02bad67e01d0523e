"""A slow upstream for the services tests: a stream that trickles for 30 s.

Served as ``tests.e2e.upstream_app:app``. ``GET /stream`` sends 1 KiB every 20 ms;
``GET /open`` says how many streams are still being sent, so a test can see that a client
that stopped reading closed its connection, and ``GET /ready`` answers at once.
"""

from __future__ import annotations

import json

import anyio
from starlette.types import Receive, Scope, Send

_open_streams = 0
_CHUNK = {"type": "http.response.body", "body": b"x" * 1024, "more_body": True}


async def _answer(send: Send, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global _open_streams
    if scope["type"] != "http":
        return
    if scope["path"] != "/stream":
        await _answer(send, json.dumps({"open": _open_streams}).encode())
        return
    _open_streams += 1
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as group:

                async def trickle() -> None:
                    while True:
                        await send(_CHUNK)
                        await anyio.sleep(0.02)

                group.start_soon(trickle)
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()  # the client left
    except OSError:
        pass  # the server may refuse a send once the client is gone
    finally:
        _open_streams -= 1
