"""Websocket sessions: a close by the client stops the work in progress.

Starlette tells a websocket endpoint that its client left only through ``receive_*()``, which
raises ``WebSocketDisconnect``; work that does not receive (a generation that streams for
seconds) goes on unseen. ``WebSocketGuard`` gives such a session the request's context (its
entry points are in ``_ws_entry.py``, its watcher in ``_ws_watcher.py``):

- After the handshake (the endpoint's ``accept()``) one watcher task owns the raw ``receive``
  (``SessionWatcher``), as for HTTP bodies: it holds at most one unread message and hands
  every message to the endpoint's next ``receive_*()`` / ``iter_*()``, in order, exactly once.
- A ``websocket.disconnect`` the watcher reads while work is in progress cancels that work:
  every open ``with ctx.work():`` block, or, with none open, the handler as a whole, unless
  the endpoint is waiting for a message (then the close is the session's normal end). The
  disconnect is still handed to the endpoint's next receive, so Starlette raises
  ``WebSocketDisconnect(code)`` there as usual.
- Nothing reaches the server after the close: a ``send`` raises ``WebSocketDisconnect(code)``
  and a ``close()`` is dropped (the socket is closed already).
- The server's own close (``websocket.close`` sent) ends the work: what comes after is not a
  hang-up.
"""

from __future__ import annotations

import time
from types import TracebackType

import anyio
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from fastapi_hangup._backend import guard_scope, leave_guard_scope
from fastapi_hangup._callbacks import run_callbacks
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._options import CancelOptions
from fastapi_hangup._report import report
from fastapi_hangup._state import WorkState
from fastapi_hangup._ws_watcher import SessionWatcher

SCOPE_KEY = "fastapi_hangup.guard"  # the HTTP guard's key: one guard per connection
OBSERVER_KEY = "fastapi_hangup.observer"  # the HTTP guard's too (the test kit's)
_NO_STATUS = 1005  # RFC 6455: the close frame carried no status code
_DROPPED = 1006  # RFC 6455: the connection closed without a close frame
_CLOSE_WAIT = 0.1  # seconds a failed send waits for the server to report the close
_ENDED_BY_CLOSE = (WebSocketDisconnect, ClientDisconnected)


class WorkScope:
    """One unit of work of a websocket session: ``with ctx.work():``.

    A close by the client while the block runs cancels it (at its next ``await``); the block
    then ends quietly and the code after it goes on, so the session can clean up, and its
    next ``receive_*()`` raises ``WebSocketDisconnect``. Entered after the client has
    closed, the block is cancelled at once.
    """

    __slots__ = ("_guard", "_scope")

    def __init__(self, guard: WebSocketGuard) -> None:
        self._guard = guard
        self._scope = guard_scope()

    @property
    def cancelled(self) -> bool:
        """Whether the block was stopped (by the client's close, or by ``cancel()``)."""
        return self._guard.closed_during(self) or self._scope.cancelled_caught

    def cancel(self) -> None:
        """Stop the block from your own code (a "stop" message); the session goes on."""
        self._scope.cancel()

    def __enter__(self) -> WorkScope:
        self._guard.enter_work(self)
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = leave_guard_scope(self._scope, exc)
        return self._guard.leave_work(self, exc, swallowed)


class WebSocketContext(CancelOnDisconnect):
    """The context of a guarded websocket session (``ctx.work()`` scopes a unit of work)."""

    __slots__ = ()
    _state: WebSocketGuard

    def work(self) -> WorkScope:
        """Return a block that a close by the client cancels, while the session goes on.

        See [Websockets](websockets.md#one-unit-of-work).
        """
        self._check_usable("work()")
        return WorkScope(self._state)


class WebSocketGuard(WorkState):
    """Owns a guarded websocket session: its context, watcher, units of work and report.

    Args:
        scope: the session's ASGI scope.
        receive: the raw ASGI ``receive``.
        send: the raw ASGI ``send``.
        options: the route's settings (``grace`` and ``callback_timeout`` apply; a deadline
            is for HTTP requests and is not used).
    """

    __slots__ = (
        "_closed_by",
        "_raw_send",
        "_reported",
        "_stopped_units",
        "_units",
        "_watcher",
        "close_code",
    )

    context_class = WebSocketContext

    def __init__(self, scope: Scope, receive: Receive, send: Send, options: CancelOptions) -> None:
        WorkState.__init__(self, scope, options, guard_scope())
        self._raw_send = send
        self._watcher = SessionWatcher(receive, self._on_close)
        self._units: list[WorkScope] = []
        self._stopped_units: list[WorkScope] = []
        self._closed_by: Message | None = None
        self._reported = False
        self.close_code: int | None = None

    # The session's receive and send, as the endpoint's WebSocket sees them.

    async def receive(self) -> Message:
        """The session's ``receive``: every message once, in order, through the watcher."""
        return await self._watcher.receive()

    async def send(self, message: Message) -> None:
        """The session's ``send``: nothing goes to the server after the client has closed."""
        if self._closed_by is not None:
            if message["type"] == "websocket.close":
                return  # the socket is closed already: there is nobody to tell
            raise WebSocketDisconnect(self.close_code or _NO_STATUS)
        try:
            await self._raw_send(message)
        except OSError:
            # The server knows the client is gone before it says so (uvicorn raises on a send
            # to a closing connection): that is the close. Raised as WebSocketDisconnect
            # here rather than by Starlette, which would also mark the WebSocket as no longer
            # connected, so that the next receive_*() could not report the close itself.
            self._on_close({"type": "websocket.disconnect", "code": _DROPPED}, False)
            raise WebSocketDisconnect(_DROPPED) from None
        except Exception:
            # daphne raises autobahn's ``Disconnected`` (no OSError) on a send to a closed
            # connection, and its disconnect is queued for the watcher but not yet read: give
            # the watcher a moment to read it. Without a close, the server's error is the error.
            if self._closed_by is None:
                with anyio.move_on_after(_CLOSE_WAIT, shield=True):
                    await self._watcher.wait_closed()
            if self._closed_by is None:
                raise
            raise WebSocketDisconnect(self.close_code or _DROPPED) from None
        kind = message["type"]
        if kind == "websocket.accept":
            if self.working:
                self._watcher.arm()
        elif kind == "websocket.close":
            self.end_work()  # the server's own close: what follows is no hang-up

    # Entering and leaving.

    def enter(self) -> None:
        """Enter the handler's cancel scope; the exit must follow in the same task."""
        scope = self.asgi_scope
        scope[SCOPE_KEY] = self
        observer = scope.get(OBSERVER_KEY)
        if observer is not None:
            observer(self.ctx)
        self.cancel_scope.__enter__()

    def end_work(self) -> None:
        """The work is over (the handler returned, or the server closed): stop watching."""
        self.working = False
        self._watcher.stop()

    async def leave(self, exc: BaseException | None) -> bool:
        """Leave the handler's scope; return whether ``exc`` ends the session quietly."""
        self.end_work()
        await self._watcher.wait_stopped(self.cancel_scope)
        self._watcher.detach()
        self.finish()
        self.asgi_scope.pop(SCOPE_KEY, None)
        swallowed = leave_guard_scope(self.cancel_scope, exc)
        if exc is None:
            quiet = False
        elif swallowed or (self._closed_by is not None and _ended_by_close(exc)):
            quiet = True  # the close stopped the handler: the session ends here
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            # Cancelled from outside (a server shutting down): it propagates, reported once.
            self.cause = self.cause or CancelCause.SERVER_SHUTDOWN
            if self.callbacks:
                await run_callbacks(self.callbacks)
            self._report(None)
            return False
        else:
            quiet = False
        if self.cause is not None:
            if self.callbacks:
                await run_callbacks(self.callbacks)
            self._report(self.hung_up_at)
        return quiet

    # Units of work.

    def enter_work(self, work: WorkScope) -> None:
        """A ``with ctx.work():`` block starts: after a close it is cancelled at once."""
        self._units.append(work)
        if self._closed_by is not None:
            self._stop(work._scope)
            self._stopped_units.append(work)

    def leave_work(self, work: WorkScope, exc: BaseException | None, swallowed: bool) -> bool:
        """A block ends; return whether ``exc`` ends it quietly (the close stopped it)."""
        self._units.remove(work)
        if work not in self._stopped_units:
            return swallowed
        if exc is None or swallowed or _ended_by_close(exc):
            self._report(self.hung_up_at)
            return True
        return False

    def closed_during(self, work: WorkScope) -> bool:
        """Whether the client's close stopped ``work``."""
        return work in self._stopped_units

    # The close.

    def _on_close(self, message: Message, waiting: bool) -> None:
        if self._closed_by is not None:
            return  # a failed send told first
        self._closed_by = message
        self.close_code = int(message.get("code", _NO_STATUS))
        if not self.working:
            return
        if self._units:
            self._stopped_units.extend(self._units)
            targets = [unit._scope for unit in self._units]
        elif not waiting:
            targets = [self.cancel_scope]
        else:
            return  # the endpoint was waiting for a message: the session's normal end
        self.hung_up_at = time.monotonic()
        self.cause = CancelCause.CLIENT_DISCONNECTED
        for target in targets:
            self._stop(target)

    def _stop(self, cancel_scope: anyio.CancelScope) -> None:
        grace = self.options.grace
        if grace:
            cancel_scope.deadline = min(cancel_scope.deadline, anyio.current_time() + grace)
        else:
            cancel_scope.cancel()

    def _report(self, since: float | None) -> None:
        if self._reported:
            return
        self._reported = True
        cause = self.cause or CancelCause.CLIENT_DISCONNECTED
        now = time.monotonic()
        report(
            self.asgi_scope,
            cause,
            None,
            work=now - self.started_at,
            hang_up=None if self.hung_up_at is None else self.hung_up_at - self.started_at,
            latency=None if since is None else max(0.0, now - since),
            close_code=self.close_code if cause is CancelCause.CLIENT_DISCONNECTED else None,
        )


def _ended_by_close(exc: BaseException) -> bool:
    """Whether ``exc`` is what the client's close raised: ``WebSocketDisconnect`` from a
    receive or a send, ``ClientDisconnected`` from ``ctx.check()``, or a group of them and
    cancellations (a task group in the handler: a reader task and a writer task)."""
    if isinstance(exc, BaseExceptionGroup):
        ended = (*_ENDED_BY_CLOSE, anyio.get_cancelled_exc_class())
        return exc.split(ended)[1] is None and exc.split(_ENDED_BY_CLOSE)[0] is not None
    return isinstance(exc, _ENDED_BY_CLOSE)
