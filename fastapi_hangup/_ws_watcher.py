"""``SessionWatcher``: one reader of a websocket's raw ``receive`` while the session works.

The HTTP arbiter's discipline (``_arbiter.py``) for ``websocket.receive``: after the handshake
one watcher task owns the raw ``receive``, holds at most one unread message, hands every message
to the endpoint's next ``receive_*()`` / ``iter_*()`` in order and exactly once, and turns the
first ``websocket.disconnect`` into a sticky state it replays (hypercorn and daphne deliver it
once).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import anyio
import anyio.lowlevel
from starlette.types import Message, Receive

from fastapi_hangup._backend import Task, join, spawn


class _State(Enum):
    IDLE = "idle"  # before the handshake: the endpoint reads the raw receive itself
    WATCHING = "watching"  # the watcher task owns the raw receive
    STOPPED = "stopped"  # the work is over: readers go straight to the raw receive


class SessionWatcher:
    """Owns a websocket's raw ``receive`` while the session works; reports the close.

    ``on_close(message, waiting)`` is called once with the ``websocket.disconnect`` message;
    ``waiting`` says whether a reader was waiting for a message at that moment.
    """

    __slots__ = (
        "_changed",
        "_disconnect",
        "_error",
        "_on_close",
        "_raw",
        "_readers",
        "_state",
        "_taken",
        "_task",
        "_unread",
        "_watching",
    )

    def __init__(self, receive: Receive, on_close: Callable[[Message, bool], None]) -> None:
        self._raw = receive
        self._on_close = on_close
        self._state = _State.IDLE
        self._unread: Message | None = None
        self._disconnect: Message | None = None
        self._error: BaseException | None = None
        self._changed: anyio.Event | None = None
        self._taken: anyio.Event | None = None
        self._task: Task | None = None
        self._watching = False
        self._readers = 0

    def arm(self) -> None:
        """Start watching (after the handshake), unless watching started or is over."""
        if self._state is _State.IDLE:
            self._state = _State.WATCHING
            self._task = spawn(self._watch)

    def stop(self) -> None:
        """Stop watching; readers read the raw ``receive`` again (what is held first)."""
        self._state = _State.STOPPED
        if self._watching:
            self._watching = False
            assert self._task is not None
            self._task.cancel()  # withdraws it from the server's receive at once
        self._notify()

    def detach(self) -> None:
        """Forget the callback (the session is over), breaking the reference cycle."""
        self._on_close = _ignore

    async def wait_stopped(self, scope: anyio.CancelScope | None = None) -> None:
        """Wait until the watcher task, if one was started, has finished."""
        if self._task is not None:
            await join(self._task, scope)

    async def wait_closed(self) -> None:
        """Wait until the watcher has read the close, or is no longer watching."""
        while self._disconnect is None and self._error is None:
            if self._state is not _State.WATCHING:
                return
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()

    async def receive(self) -> Message:
        """The next message: what the watcher holds, then what it reads, then the raw stream."""
        self._readers += 1
        try:
            while True:
                if self._unread is not None:
                    await anyio.lowlevel.checkpoint_if_cancelled()
                    message, self._unread = self._unread, None
                    if self._taken is not None:
                        self._taken.set()
                    return message
                if self._disconnect is not None:
                    return self._disconnect
                if self._error is not None:
                    raise self._error
                if self._state is not _State.WATCHING:
                    return await self._raw()
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
        finally:
            self._readers -= 1

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _stopped(self) -> bool:  # a method: mypy would take the state for the loop's
        return self._state is _State.STOPPED

    async def _watch(self) -> None:
        if self._state is not _State.WATCHING:
            return  # stopped before it ran
        self._watching = True
        try:
            while self._state is _State.WATCHING:
                message = await self._raw()
                if message["type"] != "websocket.receive":
                    self._disconnect = message
                    waiting = self._readers > 0
                    self._notify()
                    self._on_close(message, waiting)
                    return
                # Hold it until the endpoint takes it: the server's own queue (bounded by
                # its settings) keeps the rest, so the watcher never buffers more than one.
                self._unread = message
                self._taken = anyio.Event()
                self._notify()
                await self._taken.wait()
                self._taken = None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                if self._stopped():
                    return
                raise
            self._error = exc  # the server's receive failed: readers get the error
            self._notify()
        finally:
            self._watching = False


def _ignore(message: Message, waiting: bool) -> None:
    pass
