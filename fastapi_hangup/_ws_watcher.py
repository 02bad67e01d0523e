"""``SessionWatcher``: the watcher of a websocket session while it works.

The HTTP arbiter's discipline (``_watcher.py``) for ``websocket.receive``: after the handshake
one watcher task owns the raw ``receive``, holds at most one unread message, hands every
message to the endpoint's next ``receive_*()`` / ``iter_*()`` in order and exactly once, and
turns the first ``websocket.disconnect`` into a sticky state it replays (hypercorn and daphne
deliver it once). Before the handshake the endpoint reads the raw receive itself.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
from starlette.types import Message, Receive

from fastapi_hangup._watcher import State, Watcher


class SessionWatcher(Watcher):
    """Owns a websocket's raw ``receive`` while the session works; reports the close.

    ``on_close(message, waiting)`` is called once with the ``websocket.disconnect`` message;
    ``waiting`` says whether a reader was waiting for a message at that moment.
    """

    __slots__ = ("_on_close", "_readers")

    data_type = "websocket.receive"

    def __init__(self, receive: Receive, on_close: Callable[[Message, bool], None]) -> None:
        Watcher.__init__(self, receive)
        self._on_close = on_close
        self._readers = 0

    def detach(self) -> None:
        """Forget the callback (the session is over), breaking the reference cycle."""
        self._on_close = _ignore

    async def wait_closed(self) -> None:
        """Wait until the watcher has read the close, or is no longer watching."""
        while self._disconnect is None and self._error is None:
            if self._state is not State.WATCHING:
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
                    return self._take_unread()
                if self._disconnect is not None:
                    return self._disconnect
                if self._error is not None:
                    raise self._error
                if self._state is not State.WATCHING:
                    return await self._raw()
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()
        finally:
            self._readers -= 1

    def _hold(self, message: Message) -> bool:
        # Held until the endpoint takes it, whoever reads next.
        self._unread = message
        self._notify()
        return True

    def _closed(self, message: Message) -> None:
        self._on_close(message, self._readers > 0)


def _ignore(message: Message, waiting: bool) -> None:
    pass
