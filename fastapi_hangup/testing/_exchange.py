"""``Exchange``: one request on a simulated server connection, the kit's one mechanism.

Both [`HangUpClient`][fastapi_hangup.testing.HangUpClient] and
[`HangUpTransport`][fastapi_hangup.testing.HangUpTransport] run the app through an exchange. It
hands the app the request body, records every message the app sends, and delivers
``http.disconnect`` when told the client hung up (or once the response is complete, as every server
does), in the chosen server's manner. It also collects the request's ``fastapi_hangup`` log records
and its cancellation context, so a test sees the outcome without a mock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio
from starlette.types import ASGIApp, Message

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._guard import OBSERVER_KEY
from fastapi_hangup.testing._result import RequestResult

Disconnect = Literal["once", "repeat"]

_ESCAPED = (
    "a cancellation exception escaped the ASGI app; servers log it as an error (uvicorn, "
    "granian) or die of it (hypercorn's trio worker)"
)


class Exchange:
    """Runs one request through an ASGI app and records what the app did.

    Args:
        scope: the request's ASGI scope (the exchange adds its observer to it).
        body: the request body's chunks; each becomes one ``http.request`` message.
        disconnect: ``"once"`` delivers ``http.disconnect`` to one ``receive()`` and blocks
            every later call (hypercorn, daphne); ``"repeat"`` answers every call (uvicorn).
        hang_up_after_body_chunks: hang up once the app sent this many body messages.
    """

    def __init__(
        self,
        scope: dict[str, Any],
        body: AsyncIterable[bytes],
        *,
        disconnect: Disconnect = "once",
        hang_up_after_body_chunks: int | None = None,
    ) -> None:
        self.scope = scope
        self.result = RequestResult(method=scope["method"], path=scope["path"])
        self.error: Exception | None = None
        self.on_context: Callable[[CancelOnDisconnect], None] | None = None
        self.started = anyio.Event()  # the response started, or the app returned
        self.finished = anyio.Event()
        scope[OBSERVER_KEY] = self._observe
        self._body = aiter(body)
        self._ahead: bytes | None = None
        self._body_done = False
        self._body_started = False
        self._disconnect_mode = disconnect
        self._disconnects = 0  # http.disconnect messages the app has received
        self._may_disconnect = anyio.Event()
        self._changed = anyio.Event()
        self._chunk_limit = hang_up_after_body_chunks
        self._scope = anyio.CancelScope()

    def hang_up(self) -> None:
        """The client leaves: the app's next (or pending) ``receive()`` says so."""
        if not self._may_disconnect.is_set() and not self.finished.is_set():
            self.result.hung_up = True
            self.result.hung_up_at = time.monotonic()
        self._may_disconnect.set()

    def cancel(self) -> None:
        """Stop the app (the server shuts down); ``run`` returns soon after."""
        self._scope.cancel()

    async def changed(self) -> None:
        """Wait until the app sends a message or ends."""
        await self._changed.wait()

    async def run(self, app: ASGIApp, *, time_limit: float | None = None) -> None:
        """Call the app; keep what it raises in ``error``, never raise it here."""
        token = _CURRENT.set(self)
        started = time.monotonic()
        try:
            with _log_capture(), self._scope, anyio.fail_after(time_limit) as limit:
                try:
                    await app(self.scope, self.receive, self.send)
                except anyio.get_cancelled_exc_class() as exc:
                    if limit.cancel_called or self._scope.cancel_called:
                        raise
                    raise AssertionError(_ESCAPED) from exc
        except Exception as exc:  # handed to whoever reads the response
            self.error = exc
        finally:
            _CURRENT.reset(token)
            self.result.elapsed = time.monotonic() - started
            self.result.finished = True
            self.finished.set()
            self.started.set()
            self._notify()

    async def receive(self) -> Message:
        """The app's ``receive``: the body, then ``http.disconnect`` when the client goes."""
        if not self._body_done:
            return await self._next_body_message()
        if self._disconnects and self._disconnect_mode == "once":
            await anyio.sleep(math.inf)  # hypercorn and daphne: nothing ever comes again
        await self._may_disconnect.wait()
        self._disconnects += 1
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        """The app's ``send``: recorded, and noted if the app had been told the client went."""
        result = self.result
        # Counted from the moment the app's receive() said so, not from hang_up(): until a
        # task of the app reads the disconnect, a send that races it is no fault of the app.
        if result.hung_up and self._disconnects:
            result.sent_after_hang_up.append(message)
        result.messages.append(message)
        if message["type"] == "http.response.start":
            self.started.set()
        elif message["type"] == "http.response.body":
            if not message.get("more_body", False):
                self._may_disconnect.set()  # every server reports the end of the stream so
            sent = sum(m["type"] == "http.response.body" for m in result.messages)
            if self._chunk_limit is not None and sent >= self._chunk_limit:
                self.hang_up()
        self._notify()

    async def _next_body_message(self) -> Message:
        # One chunk of look-ahead, so the last chunk itself says more_body=False.
        if not self._body_started:
            self._body_started = True
            self._ahead = await anext(self._body, None)
        chunk, self._ahead = self._ahead or b"", await anext(self._body, None)
        self._body_done = self._ahead is None
        return {"type": "http.request", "body": chunk, "more_body": not self._body_done}

    def _observe(self, ctx: CancelOnDisconnect) -> None:
        self.result.context = ctx
        if self.on_context is not None:
            self.on_context(ctx)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


async def chunks_of(body: bytes | list[bytes]) -> AsyncIterator[bytes]:
    """A request body as the exchange reads it."""
    for chunk in [body] if isinstance(body, bytes) else body:
        yield chunk


def http_scope(method: str, url: str, headers: Mapping[str, str]) -> dict[str, Any]:
    """The ASGI scope of a request to ``url`` (a path and optional query string)."""
    parts = urlsplit(url)
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": parts.path or "/",
        "raw_path": (parts.path or "/").encode(),
        "query_string": parts.query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        + [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


# The exchange whose app is running in this task (and the tasks it starts), so a log record
# goes to its own request even when several are in flight.
_CURRENT: ContextVar[Exchange | None] = ContextVar("fastapi_hangup.testing.exchange", default=None)
_logger = logging.getLogger("fastapi_hangup")
_capturing = 0
_saved_level = logging.NOTSET
_shown_from = logging.NOTSET


def _keep_record(record: logging.LogRecord) -> bool:
    # A logger filter sees the record before any handler: keep it for the request, and let
    # it through only if the logger would have shown it without us.
    exchange = _CURRENT.get()
    if exchange is not None:
        exchange.result.log_records.append(record)
    return record.levelno >= _shown_from


@contextlib.contextmanager
def _log_capture() -> Iterator[None]:
    # The record is INFO, and loggers drop it before any filter when INFO is off (the
    # default): while requests run, the logger is opened to INFO and the filter above
    # hides from everyone else what they would not have seen.
    global _capturing, _saved_level, _shown_from
    if not _capturing:
        _saved_level, _shown_from = _logger.level, _logger.getEffectiveLevel()
        _logger.addFilter(_keep_record)
        _logger.setLevel(min(_shown_from, logging.INFO))
    _capturing += 1
    try:
        yield
    finally:
        _capturing -= 1
        if not _capturing:
            _logger.removeFilter(_keep_record)
            _logger.setLevel(_saved_level)
