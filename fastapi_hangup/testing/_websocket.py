"""``HangUpWebSocket``: talk to a websocket endpoint in-process, and close or drop mid-work.

Starlette's ``TestClient.websocket_connect`` runs the app in a thread and closes only between
messages; it cannot show what a session does when its client goes away while the endpoint
works. This client runs the app in the test's own event loop (asyncio or trio)::

    async with HangUpWebSocket(app, "/chat") as ws:
        await ws.send_text("write a poem")
        await ws.receive_text()  # the first token: the generation runs
        await ws.close(1001)  # the tab closes
    assert ws.result.context is not None and ws.result.context.is_cancelled
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message
from starlette.websockets import WebSocketDisconnect

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._guard import OBSERVER_KEY
from fastapi_hangup.testing import _exchange

_ESCAPED = (
    "a cancellation exception escaped the ASGI app; servers log it as an error (uvicorn, "
    "granian) or die of it (hypercorn's trio worker)"
)
_DROPPED = 1006  # RFC 6455: the connection closed without a close frame


@dataclass
class WebSocketResult:
    """What one websocket session did, seen from the client's side of the ASGI connection."""

    path: str = ""
    """The session's path."""
    messages: list[Message] = field(default_factory=list)
    """Every message the app sent (``websocket.accept``, ``.send``, ``.close``), in order."""
    received: list[Message] = field(default_factory=list)
    """Every message the app's ``receive()`` returned (``websocket.connect`` first)."""
    close_code: int | None = None
    """The code the client closed with (``1006`` for ``drop()``), if it closed."""
    closed_at: float | None = None
    """``time.monotonic()`` when the client closed."""
    sent_after_close: list[Message] = field(default_factory=list)
    """Messages the app sent after its ``receive()`` reported the close (a clean end sends
    none)."""
    context: CancelOnDisconnect | None = None
    """The session's cancellation context, if the route is guarded."""
    log_records: list[Any] = field(default_factory=list)
    """The ``fastapi_hangup`` log records of this session (one if its work was stopped)."""
    finished: bool = False
    """Whether the app has returned (or raised)."""
    finished_at: float | None = None
    """``time.monotonic()`` when the app returned."""

    @property
    def texts(self) -> list[str]:
        """The text of every ``websocket.send`` message the app sent."""
        return [m["text"] for m in self.messages if m["type"] == "websocket.send" and "text" in m]


class HangUpWebSocket:
    """A websocket client that runs the app in-process and can close or drop mid-work.

    Use it as ``async with``: entering connects (and waits for the app's ``accept()`` or
    refusal); leaving closes with ``1000`` if the test did not close, waits for the app to
    return, and raises what escaped it.

    Args:
        app: the ASGI application (your ``FastAPI()`` instance).
        path: path and optional query string, e.g. ``"/chat?room=1"``.
        headers: request headers of the handshake.
        subprotocols: the subprotocols the client offers.
        timeout: the longest the session may take, in seconds; past it the app is cancelled
            and leaving fails.
    """

    def __init__(
        self,
        app: ASGIApp,
        path: str = "/",
        *,
        headers: dict[str, str] | None = None,
        subprotocols: tuple[str, ...] = (),
        timeout: float = 10.0,
    ) -> None:
        scope = _exchange.http_scope("GET", path, headers or {})
        del scope["method"]
        scope.update(type="websocket", scheme="ws", subprotocols=list(subprotocols))
        scope[OBSERVER_KEY] = self._observe
        self.scope = scope
        self.result = WebSocketResult(path=scope["path"])
        self.error: BaseException | None = None
        self._app = app
        self._timeout = timeout
        self._inbox: list[Message] = [{"type": "websocket.connect"}]
        self._inbox_changed = anyio.Event()
        self._outbox: list[Message] = []
        self._outbox_changed = anyio.Event()
        self._closed = False  # the client closed (or dropped)
        self._told = False  # the app's receive() has returned the close
        self._tg: TaskGroup | None = None
        self._done = anyio.Event()

    async def __aenter__(self) -> HangUpWebSocket:
        self._tg = await anyio.create_task_group().__aenter__()
        self._tg.start_soon(self._run)
        with anyio.fail_after(self._timeout):
            message = await self._next_from_app()
        if message["type"] != "websocket.accept":
            self._outbox.insert(0, message)  # refused: receive() reports it
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            if exc is None and not self._closed:
                await self.close(1000)
            if exc is None:
                with anyio.fail_after(self._timeout):
                    await self._done.wait()
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)
        if exc is None and self.error is not None:
            raise self.error

    # What the client sends.

    async def send_text(self, data: str) -> None:
        """Send a text message."""
        self._push({"type": "websocket.receive", "text": data})
        await anyio.lowlevel.checkpoint()

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message."""
        self._push({"type": "websocket.receive", "bytes": data})
        await anyio.lowlevel.checkpoint()

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as a JSON text message."""
        await self.send_text(json.dumps(data))

    async def close(self, code: int = 1000, *, wait: bool = True) -> None:
        """Close the connection with a close frame carrying ``code``.

        The app's next (or pending) ``receive()`` returns ``websocket.disconnect`` with that
        code, once (later calls block, as on hypercorn). With ``wait``, return once the app
        has returned.
        """
        if not self._closed:
            self._closed = True
            self.result.close_code = code
            self.result.closed_at = time.monotonic()
            self._push({"type": "websocket.disconnect", "code": code})
        if wait:
            with anyio.fail_after(self._timeout):
                await self._done.wait()

    async def drop(self, *, wait: bool = True) -> None:
        """Drop the connection without a close frame: the server reports code ``1006``."""
        await self.close(_DROPPED, wait=wait)

    # What the app sends.

    async def receive(self) -> Message:
        """The next message the app sent after its ``accept()``.

        Raises:
            WebSocketDisconnect: the app closed the session (with its code), or returned.
        """
        with anyio.fail_after(self._timeout):
            message = await self._next_from_app()
        if message["type"] == "websocket.close":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        return message

    async def receive_text(self) -> str:
        """The text of the app's next message."""
        return cast(str, (await self.receive())["text"])

    async def receive_bytes(self) -> bytes:
        """The bytes of the app's next message."""
        return cast(bytes, (await self.receive())["bytes"])

    async def receive_json(self) -> Any:
        """The app's next text message, decoded as JSON."""
        return json.loads(await self.receive_text())

    # The simulated server.

    async def _run(self) -> None:
        token = _exchange._CURRENT.set(cast(Any, self))
        try:
            with _exchange._log_capture(), anyio.fail_after(self._timeout) as limit:
                try:
                    await self._app(self.scope, self._receive, self._send)
                except anyio.get_cancelled_exc_class() as exc:
                    if limit.cancel_called:
                        raise
                    raise AssertionError(_ESCAPED) from exc
        except Exception as exc:
            self.error = exc
        finally:
            _exchange._CURRENT.reset(token)
            self.result.finished = True
            self.result.finished_at = time.monotonic()
            self._done.set()
            self._outbox_changed.set()

    async def _receive(self) -> Message:
        while not self._inbox:
            if self._told:
                await anyio.sleep(math.inf)  # the close was delivered once: nothing comes again
            await self._inbox_changed.wait()
        message = self._inbox.pop(0)
        if message["type"] == "websocket.disconnect":
            self._told = True
        self.result.received.append(message)
        return message

    async def _send(self, message: Message) -> None:
        if self._told:
            self.result.sent_after_close.append(message)
        self.result.messages.append(message)
        self._outbox.append(message)
        self._outbox_changed.set()
        self._outbox_changed = anyio.Event()

    async def _next_from_app(self) -> Message:
        while not self._outbox:
            if self._done.is_set():
                return {"type": "websocket.close", "code": 1000}  # the app returned
            await self._outbox_changed.wait()
        return self._outbox.pop(0)

    def _push(self, message: Message) -> None:
        if self._closed and message["type"] != "websocket.disconnect":
            raise RuntimeError("the client closed the websocket: it cannot send any more")
        self._inbox.append(message)
        self._inbox_changed.set()
        self._inbox_changed = anyio.Event()

    def _observe(self, ctx: CancelOnDisconnect) -> None:
        self.result.context = ctx
