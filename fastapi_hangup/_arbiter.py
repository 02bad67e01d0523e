"""The watcher of an HTTP request: a hang-up is seen without losing a byte of the body.

While the handler works, one watcher task owns the raw ``receive`` (see ``_watcher.py``);
everyone else reads through ``ReceiveArbiter.receive``, which hands on each body message
exactly once and in order, and replays the ``http.disconnect`` for ever after.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio.lowlevel
from starlette.types import Message, Receive

from fastapi_hangup._fastapi import is_disconnect_probe
from fastapi_hangup._watcher import State, Watcher


class ReceiveArbiter(Watcher):
    """Owns the raw ``receive`` while the handler works and turns a hang-up into a callback.

    The watcher holds at most one unread body message. While a non-final body message waits
    for its reader the watcher pauses (upload backpressure is kept, a hang-up is noticed once
    the reader takes the message). The final body message is held while the watcher goes on
    listening, because after it only ``http.disconnect`` can come. An empty non-final body
    message carries no byte and is passed over.
    """

    __slots__ = ("_asked", "_on_disconnect")

    data_type = "http.request"

    def __init__(self, receive: Receive, on_disconnect: Callable[[], None]) -> None:
        Watcher.__init__(self, receive)
        self._on_disconnect = on_disconnect
        self._asked = False

    @property
    def asked(self) -> bool:
        """Whether a reader has asked for a request message."""
        return self._asked

    def detach(self) -> None:
        """Forget the disconnect callback (the request is over), breaking the reference cycle."""
        self._on_disconnect = _ignore

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
                return self._take_unread()
            if self._disconnect is not None:
                return self._disconnect
            if self._error is not None:
                raise self._error
            if self._state is State.STOPPED:
                return await self._raw()
            if self._changed is None:
                self._changed = anyio.Event()
            changed = self._changed
            # Under an eager task factory the watcher runs inside arm() up to its first real
            # wait, and may have notified already: the event made before it tells.
            self.arm()
            await changed.wait()

    def _hold(self, message: Message) -> bool:
        more = bool(message.get("more_body", False))
        if more and not message.get("body"):
            # An empty chunk carries nothing (Starlette's readers skip it), and waiting for
            # someone to take it would leave the client's body stream half-read when nobody
            # does (httpx's ASGITransport sends one first).
            return False
        self._unread = message
        self._notify()
        return more  # after the final one only http.disconnect can come: go on listening

    def _closed(self, message: Message) -> None:
        self._on_disconnect()


def _ignore() -> None:
    pass
