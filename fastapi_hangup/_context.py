"""The per-request context object that handlers receive."""

from __future__ import annotations

import logging
import threading
import time

import anyio
from starlette.types import Message, Receive, Scope

from fastapi_hangup._arbiter import ReceiveArbiter
from fastapi_hangup._backend import call_soon, new_cancel_scope

logger = logging.getLogger("fastapi_hangup")

#: Where the one context of a request lives in the ASGI scope, so every entry point shares it.
SCOPE_KEY = "fastapi_hangup.context"
#: An optional callback in the ASGI scope that is told about the context once it exists
#: (``fastapi_hangup.testing`` uses it to hand the context to your test).
OBSERVER_KEY = "fastapi_hangup.observer"


class CancelOnDisconnect:
    """A request's cancellation context: the scope its work runs in, and whether it was cancelled.

    You never build one yourself: declare ``ctx: CancelCtx`` (or
    ``Annotated[CancelOnDisconnect, Depends(cancel_ctx)]``) and FastAPI hands you the request's
    context. When the client hangs up while the endpoint works, :attr:`is_cancelled` turns
    true and :attr:`scope` is cancelled, so the endpoint gets the backend's cancellation
    exception (``asyncio.CancelledError`` or ``trio.Cancelled``) at its next ``await``.
    """

    __slots__ = (
        "_arbiter",
        "_asgi_scope",
        "_cancelled",
        "_finished",
        "_hung_up_at",
        "_loop_thread",
        "_raw_receive",
        "_scope",
        "_started_at",
        "_working",
    )

    def __init__(self, asgi_scope: Scope, receive: Receive) -> None:
        self._asgi_scope = asgi_scope
        self._raw_receive = receive
        self._arbiter: ReceiveArbiter | None = None  # made when first needed: most requests never
        self._scope = new_cancel_scope()
        self._cancelled = False
        self._working = True
        self._finished = False
        self._started_at = time.monotonic()
        self._hung_up_at: float | None = None
        self._loop_thread = threading.get_ident()

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "finished" if self._finished else "active"
        return f"<CancelOnDisconnect {state} {self._asgi_scope.get('path', '?')!r}>"

    @property
    def is_cancelled(self) -> bool:
        """Whether the client hung up while the work ran. Safe to read from any thread.

        A sync endpoint (which runs in a worker thread that Python cannot stop) reads this to
        return early.
        """
        return self._cancelled

    @property
    def scope(self) -> anyio.CancelScope:
        """The anyio cancel scope around the endpoint's work; a hang-up cancels it.

        Raises:
            RuntimeError: if the request is over or you are in a worker thread.
        """
        self._check_usable("scope")
        return self._scope

    def shield(self) -> anyio.CancelScope:
        """Return a cancel scope that shields its block from the hang-up.

        Code in ``with ctx.shield():`` runs to completion even if the client hangs up
        meanwhile; the cancellation then arrives at the first ``await`` after the block.

        Raises:
            RuntimeError: if the request is over or you are in a worker thread.
        """
        self._check_usable("shield()")
        return anyio.CancelScope(shield=True)

    # -- lifecycle, driven by the entry points (dependency, decorator, route class) ----------

    def start(self) -> None:
        """Enter :attr:`scope`, make the context findable, and arm the watcher lazily.

        Call it in the task that runs the work; :meth:`close` must follow in the same task.
        """
        scope = self._asgi_scope
        scope[SCOPE_KEY] = self
        observer = scope.get(OBSERVER_KEY)
        if observer is not None:
            observer(self)
        self._scope.__enter__()
        call_soon(self._watch)

    async def receive(self) -> Message:
        """The request's ``receive`` as every reader must see it once watching may start."""
        return await self._get_arbiter().receive()

    def hang_up(self) -> None:
        """The client went away: cancel the work, unless it is over already."""
        if self._working and not self._cancelled:
            self._hung_up_at = time.monotonic()
            self._cancelled = True
            self._scope.cancel()

    def end_work(self) -> None:
        """The handler's work is over: stop watching, so later disconnects mean nothing."""
        self._working = False
        if self._arbiter is not None:
            self._arbiter.stop()

    async def close(self, exc: BaseException | None) -> bool:
        """End the work, wait for the watcher task to go, and leave :attr:`scope`.

        Returns:
            Whether ``exc`` was the hang-up's cancellation, which the scope swallowed: the
            caller then ends the request quietly.

        Raises:
            RuntimeError: the application cancelled :attr:`scope` itself.
        """
        self.end_work()
        if self._arbiter is not None:
            await self._arbiter.wait_stopped()
        self._finished = True
        # Break the scope <-> context cycle, so both die by reference counting instead of
        # waiting for the garbage collector (measured: ~5 us per request).
        self._asgi_scope.pop(SCOPE_KEY, None)
        if exc is None:
            self._scope.__exit__(None, None, None)
            return False
        if not self._scope.__exit__(type(exc), exc, exc.__traceback__):
            return False
        if self._cancelled:
            return True
        raise RuntimeError(
            "ctx.scope was cancelled by the application, not by a hang-up, so the endpoint "
            "produced no response. To give up on a piece of work, wrap just that piece in "
            "`with anyio.move_on_after(...)` or your own `anyio.CancelScope()`."
        ) from exc

    def log_hang_up(self) -> None:
        """Write the one log record of an abandoned request."""
        scope = self._asgi_scope
        route = getattr(scope.get("route"), "path", None) or scope.get("path", "?")
        ended = self._hung_up_at if self._hung_up_at is not None else time.monotonic()
        ran_ms = (ended - self._started_at) * 1000
        logger.info(
            "%s %s 499 Client Closed Request: work stopped after %.1f ms",
            scope.get("method", "?"),
            route,
            ran_ms,
            extra={
                "method": scope.get("method"),
                "route": route,
                "status_code": 499,
                "duration_ms": ran_ms,
            },
        )

    def _watch(self) -> None:
        if self._working:
            self._get_arbiter().arm()

    def _get_arbiter(self) -> ReceiveArbiter:
        if self._arbiter is None:
            self._arbiter = ReceiveArbiter(self._raw_receive, self.hang_up)
            if not self._working:
                self._arbiter.stop()
        return self._arbiter

    def _check_usable(self, what: str) -> None:
        if self._finished:
            raise RuntimeError(
                f"ctx.{what} was used after its request ended. The context belongs to one "
                "request; for work that outlives it (a background task) use "
                "`anyio.CancelScope(shield=True)` or no scope at all."
            )
        if threading.get_ident() != self._loop_thread:
            raise RuntimeError(
                f"ctx.{what} was used from a worker thread. Cancel scopes live on the event "
                "loop; in a sync endpoint read `ctx.is_cancelled` and return early instead."
            )
