"""``Lifespan``: the ASGI lifespan protocol, driven the way a server drives it.

Startup runs when the transport is entered, shutdown when it is left, so an app whose pool or
client opens in its ``lifespan`` is tested as it runs in production. The ``state`` the
lifespan yields is what each request's ``request.state`` starts from.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
from anyio.abc import TaskGroup
from starlette.types import ASGIApp, Message


class LifespanFailed(RuntimeError):
    """The app reported that its startup or shutdown failed."""


class Lifespan:
    """Runs one app's lifespan in a task of ``task_group``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._phase = "startup"
        self._asked = 0
        self._returned = False
        self._answered = anyio.Event()  # the app answered the current phase, or returned
        self._shutdown = anyio.Event()
        self._failure: str | None = None
        self._error: Exception | None = None

    async def startup(self, task_group: TaskGroup) -> None:
        """Start the app's lifespan and wait for its startup.

        Raises:
            LifespanFailed: the app sent ``lifespan.startup.failed``, or returned without
                completing its startup.
            Exception: what the app raised during its startup.
        """
        task_group.start_soon(self._run)
        await self._answered.wait()
        self._raise_failure()

    async def shutdown(self) -> None:
        """Ask the app to shut down and wait until it has.

        Raises:
            LifespanFailed: the app sent ``lifespan.shutdown.failed``.
            Exception: what the app raised during its shutdown.
        """
        if self._returned:  # nothing to shut down (a startup that failed, or returned)
            return
        self._answered = anyio.Event()
        self._phase = "shutdown"
        self._shutdown.set()
        await self._answered.wait()
        self._raise_failure()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as exc:  # raised from startup() or shutdown(), in the test's task
            self._error = exc
        finally:
            self._returned = True
            if not self._answered.is_set():
                self._failure = self._failure or f"the app returned during its {self._phase}"
                self._answered.set()

    async def _receive(self) -> Message:
        self._asked += 1
        if self._asked == 1:
            return {"type": "lifespan.startup"}
        await self._shutdown.wait()
        if self._asked == 2:
            return {"type": "lifespan.shutdown"}
        await anyio.sleep(math.inf)  # pragma: no cover - a lifespan reads no third message
        raise AssertionError  # pragma: no cover

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind.endswith(".failed"):
            self._failure = message.get("message") or kind
        self._answered.set()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error
        if self._failure is not None:
            raise LifespanFailed(f"the app's lifespan failed: {self._failure}")
