"""Hand-scripted ASGI plumbing for the in-memory tests (Starlette's style: a scripted
``receive``, a recording ``send``), plus a backend-neutral view of the running tasks."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
from starlette.types import Message

from fastapi_hangup.testing import _http_scope

BODY_END: Message = {"type": "http.request", "body": b"", "more_body": False}
DISCONNECT: Message = {"type": "http.disconnect"}


def body_messages(chunks: Iterable[bytes]) -> list[Message]:
    """The ``http.request`` messages of a body sent as ``chunks`` (at least one message)."""
    parts = list(chunks) or [b""]
    return [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]


class ScriptedReceive:
    """A raw ASGI ``receive`` that hands out the messages the test pushes, in order.

    Like hypercorn and daphne, it delivers each message to exactly one caller: a second
    caller waiting at the same time keeps waiting (for ever, if nothing else is pushed). It
    counts its calls and how many were waiting at once, so a test can see how many readers
    the raw ``receive`` had.
    """

    def __init__(self, messages: Iterable[Message] = ()) -> None:
        self._queue: deque[Message] = deque(messages)
        self._arrived: anyio.Event | None = None
        self._error: Exception | None = None
        self.calls = 0
        self.waiting = 0
        self.max_waiting = 0
        self.delivered: list[Message] = []

    def push(self, *messages: Message) -> None:
        """Make ``messages`` available to the next callers."""
        self._queue.extend(messages)
        self._wake()

    def fail(self, error: Exception) -> None:
        """Make every call from now on raise ``error`` (a server whose receive broke)."""
        self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    async def __call__(self) -> Message:
        self.calls += 1
        self.waiting += 1
        self.max_waiting = max(self.max_waiting, self.waiting)
        try:
            while not self._queue:
                if self._error is not None:
                    raise self._error
                if self._arrived is None:
                    self._arrived = anyio.Event()
                await self._arrived.wait()
        finally:
            self.waiting -= 1
        message = self._queue.popleft()
        self.delivered.append(message)
        return message


class RecordingSend:
    """A raw ASGI ``send`` that records every message."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        return int(starts[0]["status"]) if starts else None


def http_scope(method: str, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A minimal ASGI 3 HTTP scope for ``method path`` (the one ``HangUpClient`` sends)."""
    return _http_scope(method, path, headers or {})


def running_tasks() -> set[object]:
    """Every task the event loop knows about right now, on asyncio or trio."""
    import asyncio

    try:
        return set(asyncio.all_tasks())
    except RuntimeError:  # no asyncio loop running: we are on trio
        pass
    import trio

    found: set[object] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found
