"""``Watcher``: the one reader of a raw ASGI ``receive`` while the work runs.

hypercorn and daphne deliver a disconnect once: two tasks awaiting the raw ``receive`` race
for it and the loser blocks for ever. So while the work runs, one watcher task owns the raw
``receive``; everyone else reads through the watcher's own ``receive``, which hands on each
message exactly once and in order, holds at most one unread, and replays the disconnect for
ever after. ``ReceiveArbiter`` (``_arbiter.py``) is the watcher of an HTTP request, whose
disconnect is a hang-up; ``SessionWatcher`` (``_ws_watcher.py``) that of a websocket session,
whose disconnect is the close. This class is the life they share: the task, its three
states, the held message and the events that tell readers of a change.
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar

import anyio
from starlette.types import Message, Receive

from fastapi_hangup._backend import Task, join, spawn


class State(Enum):
    IDLE = "idle"  # not watching yet: readers read the raw receive themselves
    WATCHING = "watching"  # the watcher task owns the raw receive
    STOPPED = "stopped"  # the work is over: readers go straight to the raw receive


class Watcher:
    """Owns a raw ``receive`` from ``arm()`` to ``stop()`` and keeps what it reads for readers.

    A subclass names the message type that carries data (``data_type``; any other is the
    disconnect), says what to do with a data message (``_hold``) and whom to tell of the
    disconnect (``_closed``), and reads for its readers in its own ``receive``.
    """

    __slots__ = (
        "_changed",
        "_disconnect",
        "_error",
        "_raw",
        "_state",
        "_taken",
        "_task",
        "_unread",
        "_watching",
    )

    data_type: ClassVar[str]

    def __init__(self, receive: Receive) -> None:
        self._raw = receive
        self._state = State.IDLE
        self._unread: Message | None = None
        self._disconnect: Message | None = None
        self._error: BaseException | None = None
        # Events are created lazily by whoever waits: a request that never suspends makes none.
        self._changed: anyio.Event | None = None
        self._taken: anyio.Event | None = None
        self._task: Task | None = None
        self._watching = False  # the watcher task has started and may wait in the raw receive

    def arm(self) -> None:
        """Start the watcher task now, unless it runs already or the work is over."""
        if self._state is State.IDLE:
            self._state = State.WATCHING
            self._task = spawn(self._watch)

    def stop(self) -> None:
        """Stop watching; the raw ``receive`` is free again when this returns.

        Cancelling a task blocked in ``receive()`` withdraws it from the server's queue at
        once on both backends, so a reader that comes next (Starlette's own disconnect
        listener) cannot lose a message to the dying watcher.
        """
        self._state = State.STOPPED
        if self._watching:
            # A watcher that has not started yet sees STOPPED and returns: cancelling it
            # would end its task before its first line, as a cancelled task.
            self._watching = False
            assert self._task is not None
            self._task.cancel()
        self._notify()  # readers waiting on the watcher now read the raw receive themselves

    async def wait_stopped(self, scope: anyio.CancelScope | None = None) -> None:
        """Wait until the watcher task, if one was started, has finished; ``scope`` is the
        guard's, if the caller leaves it next (see ``_backend.join``)."""
        if self._task is not None:
            await join(self._task, scope)

    def _take_unread(self) -> Message:
        """Hand over the held message and let the watcher go on."""
        message, self._unread = self._unread, None
        assert message is not None
        if self._taken is not None:
            self._taken.set()
        return message

    def _hold(self, message: Message) -> bool:
        """Keep a data message for the next reader; return whether to wait until it is taken."""
        raise NotImplementedError

    def _closed(self, message: Message) -> None:
        """The disconnect has come (it is kept and replayed): tell whom it concerns."""
        raise NotImplementedError

    def _stopped(self) -> bool:  # a method: mypy would take the state for the loop's
        return self._state is State.STOPPED

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _watch(self) -> None:
        if self._state is not State.WATCHING:
            return  # stopped before it ran
        self._watching = True
        data_type = self.data_type
        try:
            while self._state is State.WATCHING:
                message = await self._raw()
                if message["type"] != data_type:
                    self._disconnect = message
                    self._notify()
                    self._closed(message)
                    return
                if self._hold(message):
                    # The server's own queue (bounded by its settings) keeps the rest, so the
                    # watcher never holds more than one message.
                    self._taken = anyio.Event()
                    await self._taken.wait()
                    self._taken = None
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                if self._stopped():
                    return  # stop() cancelled it: the task ends as a task that returned
                raise  # the event loop is shutting down: the task ends like any other
            # The server's receive() failed (a test's fake receive may even raise a
            # BaseException): the watcher must not die of it, readers get the error instead.
            self._error = exc
            self._notify()
        finally:
            self._watching = False
