"""``ctx.on_cancel`` callbacks: registered per request, run once if it is cancelled."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import anyio

from fastapi_hangup._report import logger


class CallbackHandle:
    """A registered ``on_cancel`` callback.

    [`remove`][fastapi_hangup.CallbackHandle.remove] unregisters it.
    """

    __slots__ = ("_active", "callback", "timeout")

    def __init__(self, callback: Callable[[], object], timeout: float) -> None:
        self.callback = callback
        self.timeout = timeout
        self._active = True

    def remove(self) -> bool:
        """Unregister the callback; returns whether it was still registered (not yet run)."""
        was_active, self._active = self._active, False
        return was_active

    async def _run(self) -> None:
        if not self.remove():
            return
        try:
            with anyio.move_on_after(self.timeout) as limit:
                result = self.callback()
                if inspect.isawaitable(result):
                    await result
            if limit.cancelled_caught:
                logger.warning(
                    "on_cancel callback %r did not finish within %g s", self.callback, self.timeout
                )
        except Exception:
            logger.exception("on_cancel callback %r failed", self.callback)


async def run_callbacks(handles: list[CallbackHandle]) -> None:
    """Run the registered callbacks in order, shielded from the request's cancellation."""
    with anyio.CancelScope(shield=True):
        for handle in handles:
            await handle._run()
