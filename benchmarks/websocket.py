"""What a guarded websocket session costs per message, and how soon a close stops its work.

In-process, with a hand-written ASGI ``receive`` and ``send`` (no server, no sockets), on asyncio
and trio. Prints, per backend:

- the time per echoed message of a plain websocket endpoint and of the same endpoint guarded by
  ``ctx: CancelCtx`` (every message goes through the session's watcher task);
- the close-to-cancel latency: from the moment the server's ``receive`` returns
  ``websocket.disconnect`` to the cancelled generation's ``except`` block.

    uv run python benchmarks/websocket.py [--messages 20000] [--closes 200]

The real servers' figures (the socket and the server included) come from the websocket e2e
tests: ``uv run pytest -m e2e -rP tests/e2e/test_websocket_e2e.py`` prints them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.types import Message

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi_hangup import CancelCtx


def build() -> tuple[FastAPI, list[float]]:
    """The app: ``/plain`` and ``/guarded`` echo; ``/generate`` generates until cancelled."""
    app = FastAPI()
    cancelled_at: list[float] = []

    @app.websocket("/plain")
    async def plain(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    @app.websocket("/guarded")
    async def guarded(websocket: WebSocket, ctx: CancelCtx) -> None:
        await plain(websocket)

    @app.websocket("/generate")
    async def generate(websocket: WebSocket, ctx: CancelCtx) -> None:
        await websocket.accept()
        await websocket.receive_text()
        try:
            await anyio.sleep(60)
        except anyio.get_cancelled_exc_class():
            cancelled_at.append(time.perf_counter())
            raise

    return app, cancelled_at


class Channel:
    """A server's side of one session: messages to hand the app, and a close on demand."""

    def __init__(self, messages: list[Message]) -> None:
        self.inbox: deque[Message] = deque(messages)
        self.arrived = anyio.Event()
        self.closed_at = 0.0
        self.sent = 0

    def push(self, message: Message) -> None:
        self.inbox.append(message)
        self.arrived.set()

    async def receive(self) -> Message:
        while not self.inbox:
            self.arrived = anyio.Event()
            await self.arrived.wait()
        message = self.inbox.popleft()
        if message["type"] == "websocket.disconnect":
            self.closed_at = time.perf_counter()
        return message

    async def send(self, message: Message) -> None:
        self.sent += 1


def scope(path: str) -> dict[str, Any]:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
        "subprotocols": [],
        "state": {},
    }


async def echo_cost(app: FastAPI, path: str, count: int) -> float:
    """Microseconds per echoed message."""
    messages: list[Message] = [{"type": "websocket.connect"}]
    messages += [{"type": "websocket.receive", "text": "x"}] * count
    messages.append({"type": "websocket.disconnect", "code": 1000})
    channel = Channel(messages)
    started = time.perf_counter()
    await app(scope(path), channel.receive, channel.send)
    elapsed = time.perf_counter() - started
    assert channel.sent == count + 1  # the accept and every echo
    return elapsed / count * 1e6


async def close_latency(app: FastAPI, cancelled_at: list[float]) -> float:
    """Milliseconds from the server's disconnect to the generation's cancellation."""
    channel = Channel([{"type": "websocket.connect"}, {"type": "websocket.receive", "text": "go"}])
    async with anyio.create_task_group() as tg:
        tg.start_soon(app, scope("/generate"), channel.receive, channel.send)
        await anyio.sleep(0.005)  # the generation runs
        channel.push({"type": "websocket.disconnect", "code": 1001})
    return (cancelled_at[-1] - channel.closed_at) * 1000


async def measure(messages: int, closes: int) -> dict[str, float]:
    app, cancelled_at = build()
    plain = min([await echo_cost(app, "/plain", messages) for _ in range(3)])
    guarded = min([await echo_cost(app, "/guarded", messages) for _ in range(3)])
    latencies = [await close_latency(app, cancelled_at) for _ in range(closes)]
    return {
        "plain_us": plain,
        "guarded_us": guarded,
        "latency_median_ms": statistics.median(latencies),
        "latency_max_ms": max(latencies),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--closes", type=int, default=200)
    args = parser.parse_args(argv)
    print("| backend | plain µs/message | guarded µs/message | close-to-cancel median | max |")
    print("| --- | --- | --- | --- | --- |")
    for backend in ("asyncio", "trio"):
        r = anyio.run(measure, args.messages, args.closes, backend=backend)
        print(
            f"| {backend} | {r['plain_us']:.1f} | {r['guarded_us']:.1f} | "
            f"{r['latency_median_ms']:.3f} ms | {r['latency_max_ms']:.3f} ms |"
        )


if __name__ == "__main__":
    main()
