"""One reader of the raw ASGI ``receive``, so a hang-up is seen without losing a byte.

hypercorn and daphne deliver ``http.disconnect`` once: two tasks awaiting the raw ``receive``
race for it and the loser blocks for ever. So while the handler works, one watcher task owns
the raw ``receive``. Everyone else reads through ``ReceiveArbiter.receive``, which hands on
each message exactly once and in order, and replays the disconnect for ever after.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import anyio
import anyio.lowlevel
from starlette.types import Message, Receive

from fastapi_hangup._backend import Task, join, spawn
from fastapi_hangup._fastapi import is_disconnect_probe


class _State(Enum):
    IDLE = "idle"  # nobody has asked for the watcher yet
    WATCHING = "watching"  # the watcher task owns the raw receive
    STOPPED = "stopped"  # the handler's work is over: readers go straight to the raw receive


class ReceiveArbiter:
    """Owns the raw ``receive`` while the handler works and turns a hang-up into a callback.

    The watcher holds at most one unread body message. While a non-final body message waits
    for its reader the watcher pauses (upload backpressure is kept, a hang-up is noticed once
    the reader takes the message). The final body message is held while the watcher goes on
    listening, because after it only ``http.disconnect`` can come. An empty non-final body
    message carries no byte and is passed over.
    """

    __slots__ = (
        "_asked",
        "_changed",
        "_disconnect",
        "_error",
        "_on_disconnect",
        "_raw",
        "_state",
        "_taken",
        "_task",
        "_unread",
        "_watching",
    )

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        self._raw = receive
        self._on_disconnect = on_disconnect
        self._state = _State.IDLE
        self._unread: Message | None = None
        self._disconnect: Message | None = None
        self._error: BaseException | None = None
        # Events are created lazily by whoever waits: a request that never suspends makes none.
        self._changed: anyio.Event | None = None
        self._taken: anyio.Event | None = None
        self._task: Task | None = None
        self._watching = False  # the watcher task has started and may wait in the raw receive
        self._asked = False

    @property
    def asked(self) -> bool:
        """Whether a reader has asked for a request message."""
        return self._asked

    def detach(self) -> None:
        """Forget the disconnect callback (the request is over), breaking the reference cycle."""
        self._on_disconnect = _ignore

    def arm(self) -> None:
        """Start the watcher task now, unless it runs already or the work is over."""
        if self._state is _State.IDLE:
            self._state = _State.WATCHING
            self._task = spawn(self._watch)

    def stop(self) -> None:
        """Stop watching; the raw ``receive`` is free again when this returns.

        Cancelling a task blocked in ``receive()`` withdraws it from the server's queue at
        once on both backends, so a reader that comes next (Starlette's own disconnect
        listener) cannot lose a message to the dying watcher.
        """
        self._state = _State.STOPPED
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

    async def receive(self) -> Message:
        """Return the next request message: what the watcher holds, then the raw stream."""
        self._asked = True
        while True:
            if self._unread is not None:
                # Request.is_disconnected() calls receive() in a cancelled scope: answer it
                # with the disconnect if there is one, else fail there, but never hand over
                # (and so drop) the body message.
                if self._disconnect is not None and is_disconnect_probe():
                    return self._disconnect
                await anyio.lowlevel.checkpoint_if_cancelled()
                message, self._unread = self._unread, None
                if self._taken is not None:
                    self._taken.set()
                return message
            if self._disconnect is not None:
                return self._disconnect
            if self._error is not None:
                raise self._error
            if self._state is _State.STOPPED:
                return await self._raw()
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            # Under an eager task factory the watcher runs inside arm() up to its first real
            # wait, and may have notified already: the event made before it tells.
            self.arm()
            await changed.wait()

    def _stopped(self) -> bool:  # a method: mypy would take the state for the loop's
        return self._state is _State.STOPPED

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _watch(self) -> None:
        if self._state is not _State.WATCHING:
            return  # stopped before it ran
        self._watching = True
        try:
            while self._state is _State.WATCHING:
                message = await self._raw()
                if message["type"] != "http.request":
                    self._disconnect = message
                    self._notify()
                    self._on_disconnect()
                    return
                more = message.get("more_body", False)
                if more and not message.get("body"):
                    # An empty chunk carries nothing (Starlette's readers skip it), and
                    # waiting for someone to take it would leave the client's body stream
                    # half-read when nobody does (httpx's ASGITransport sends one first).
                    continue
                self._unread = message
                self._notify()
                if more:
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


def _ignore() -> None:
    pass
