"""The per-request context object that handlers receive: only what handlers call.

The request's lifecycle (the watcher, the clocks, entering and leaving the cancel scope, the
log record) lives in ``fastapi_hangup._guard.RequestGuard``. The guard is a
``fastapi_hangup._state.WorkState``, which a context only reads, as trio's ``CancelScope``
reads its ``CancelStatus``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.to_process
import anyio.to_thread

from fastapi_hangup._backend import cancel_was_called
from fastapi_hangup._callbacks import CallbackHandle
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded

if TYPE_CHECKING:
    from fastapi_hangup._state import WorkState
    from fastapi_hangup._websocket import WorkScope

T = TypeVar("T")

_NOT_A_DEPENDENCY = (
    "CancelOnDisconnect is the type of the context, not a dependency FastAPI can build: "
    "declare the parameter as `ctx: CancelCtx` (from fastapi_hangup), or write "
    "`ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx)]`."
)


class _NoSignature:
    """Makes ``inspect.signature(CancelOnDisconnect)`` fail with advice, so ``Depends()`` on
    the class (which FastAPI inspects when the route is defined) explains itself."""

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            raise TypeError(_NOT_A_DEPENDENCY)
        raise AttributeError("__signature__")


class CancelOnDisconnect:
    """A request's cancellation context: the scope its work runs in, and whether it was cancelled.

    You never build one yourself: declare ``ctx: CancelCtx`` (or
    ``Annotated[CancelOnDisconnect, Depends(cancel_ctx)]``) and FastAPI hands you the request's
    context. When the client hangs up while the endpoint works,
    [`is_cancelled`][fastapi_hangup.CancelOnDisconnect.is_cancelled] turns true and
    [`scope`][fastapi_hangup.CancelOnDisconnect.scope] is cancelled, so the endpoint gets the
    backend's cancellation exception (``asyncio.CancelledError`` or ``trio.Cancelled``) at its next
    ``await``.

    ``inspect.signature(CancelOnDisconnect)`` raises on purpose: it is what FastAPI inspects
    for ``Depends(CancelOnDisconnect)``, and the error says what to write instead.
    """

    __slots__ = ("_state",)

    def __init__(self, state: WorkState) -> None:
        self._state = state  # the guard's: it writes, the context reads

    __signature__ = _NoSignature()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A bare ``ctx: CancelOnDisconnect`` parameter is no request field: say what is."""
        raise TypeError(_NOT_A_DEPENDENCY)

    def __repr__(self) -> str:
        cause = self.cause
        state = cause.value if cause else "finished" if self._state.finished else "active"
        return f"<CancelOnDisconnect {state} {self._state.asgi_scope.get('path', '?')!r}>"

    @property
    def cause(self) -> CancelCause | None:
        """Why the work was cancelled, or ``None`` while the request is alive.

        Safe to read from any thread. A passed deadline shows here at once, even before the
        event loop has delivered the cancellation.
        """
        state = self._state
        deadline = state.deadline
        if (
            state.cause is None
            and state.working
            and deadline is not None
            and (time.monotonic() >= deadline or self._timer_fired())
        ):
            return CancelCause.DEADLINE_EXCEEDED
        return state.cause

    @property
    def is_cancelled(self) -> bool:
        """Whether the work was cancelled (``cause is not None``). Safe to read from any thread.

        A sync endpoint (which runs in a worker thread that Python cannot stop) reads this to
        return early.
        """
        return self.cause is not None

    @property
    def scope(self) -> anyio.CancelScope:
        """The anyio cancel scope around the endpoint's work; a hang-up cancels it.

        On asyncio, while the work's cleanup runs after its one cancellation, the scope reads
        as shielded and not cancelled (``cancel_called`` is ``False``): ask
        [`is_cancelled`][fastapi_hangup.CancelOnDisconnect.is_cancelled] instead.

        Raises:
            RuntimeError: if the request is over or you are in a worker thread.
        """
        self._check_usable("scope")
        return self._state.cancel_scope

    @property
    def deadline(self) -> float | None:
        """When the request's time budget runs out, in ``time.monotonic()`` seconds, or ``None``."""
        return self._state.deadline

    def remaining(self) -> float:
        """Seconds left of the time budget (``math.inf`` without one, never below zero).

        Pass it on to downstream calls, e.g. ``httpx.get(url, timeout=ctx.remaining())``.
        """
        deadline = self._state.deadline
        if deadline is None:
            return math.inf
        return max(0.0, deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the work was cancelled; call it between steps of a sync endpoint.

        Works in any thread: FastAPI's worker thread, ``ctx.run_sync``, your own.

        Raises:
            ClientDisconnected: the client hung up (or the server is shutting down).
            DeadlineExceeded: the time budget ran out.
        """
        cause = self.cause
        if cause is CancelCause.DEADLINE_EXCEEDED:
            self._state.deadline_raised = True  # the request ends with the 504, even if caught
            raise DeadlineExceeded(self._state.budget or 0.0)
        if cause is not None:
            raise ClientDisconnected()

    def shield(self, timeout: float | None = None) -> anyio.CancelScope:
        """Return a cancel scope that shields its block from the hang-up.

        Code in ``with ctx.shield():`` runs to completion even if the client hangs up
        meanwhile; the cancellation then arrives at the first ``await`` after the block.

        Args:
            timeout: the longest the block may run, in seconds. Past it, the block itself is
                cancelled (check ``scope.cancelled_caught``) and the code after it goes on.

        Raises:
            RuntimeError: if the request is over or you are in a worker thread.
        """
        self._check_usable("shield()")
        if timeout is None:
            return anyio.CancelScope(shield=True)
        return anyio.CancelScope(shield=True, deadline=anyio.current_time() + timeout)

    def on_cancel(
        self, callback: Callable[[], object], *, timeout: float | None = None
    ) -> CallbackHandle:
        """Run ``callback`` if the request is cancelled; never when it completes normally.

        Use it to tell someone else to stop: revoke a job on a task queue, cancel an upstream
        request. Callbacks run once the endpoint's work has unwound, one after another, in
        the request's task, shielded from the cancellation. A sync callback runs on the event
        loop (keep it short); an async one (a callable returning an awaitable) is awaited for
        at most ``timeout`` seconds. Errors and timeouts are logged, never raised.

        Args:
            callback: a callable taking no arguments; it may return an awaitable.
            timeout: the longest an async callback may take (default: the route's
                ``callback_timeout``, 5 s).

        Returns:
            A handle whose ``remove()`` unregisters the callback.

        Raises:
            ValueError: for a timeout that is not a positive number of seconds.
        """
        state = self._state
        if timeout is None:
            timeout = state.options.callback_timeout
        elif not (0 < timeout < math.inf):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        handle = CallbackHandle(callback, timeout)
        if state.callbacks is None:
            state.callbacks = []
        state.callbacks.append(handle)
        return handle

    async def run_sync(self, func: Callable[..., T], *args: Any, abandon: bool = False) -> T:
        """Run a blocking call in a worker thread.

        The thread can call [`check`][fastapi_hangup.CancelOnDisconnect.check].

        Python cannot stop a thread. By default a hang-up waits for the call to return (it
        should check ``ctx.is_cancelled`` or call ``ctx.check()`` between steps). With
        ``abandon=True`` the endpoint stops waiting at once and the thread runs on unseen.
        """
        return await anyio.to_thread.run_sync(func, *args, abandon_on_cancel=abandon)

    async def run_in_process(self, func: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound work in a worker process, which is killed on hang-up.

        The one way to stop CPU-bound Python code at once. ``func`` and its arguments must
        be picklable (a module-level function); the process pool is anyio's.
        """
        return await anyio.to_process.run_sync(func, *args, cancellable=True)

    def work(self) -> WorkScope:
        """Return a block that a close by the client cancels, on a websocket route.

        ``with ctx.work():`` scopes one unit of work of a websocket session (one generation
        of a chat): a close while it runs cancels the block at its next ``await``, the block
        ends quietly, and the session's next ``receive_*()`` raises ``WebSocketDisconnect``.
        See [Websockets](websockets.md#one-unit-of-work).

        Raises:
            RuntimeError: on an HTTP route, where the request is the unit of work already,
                or on a websocket route that is not guarded.
        """
        self._check_usable("work()")
        raise RuntimeError(
            "ctx.work() scopes one unit of work of a websocket session; on an HTTP route the "
            "request's whole work is the unit already, and a hang-up cancels it. Remove the "
            "`with ctx.work():`, or use `with anyio.CancelScope() as scope:` for a piece of "
            "work you want to stop yourself."
        )

    def _timer_fired(self) -> bool:
        # The scope's own timer may fire first (uvloop runs timers up to ~0.1 ms early), but
        # only the event loop's thread may ask it (trio reads its clock to answer).
        state = self._state
        return threading.get_ident() == state.loop_thread and cancel_was_called(state.cancel_scope)

    def _check_usable(self, what: str) -> None:
        state = self._state
        if state.inert:
            raise RuntimeError(
                f"ctx.{what} was used on a websocket route that is not guarded: a "
                "`Depends(cancel_ctx)` among an app's or router's dependencies steps aside "
                "there, and its context is never cancelled. Declare `ctx: CancelCtx` as a "
                "parameter of the websocket endpoint to guard the session (or use "
                "`cancel_ctx_with(websockets=True)`); without, the endpoint learns that its "
                "client left from WebSocketDisconnect, raised by websocket.receive_*()."
            )
        if state.finished:
            raise RuntimeError(
                f"ctx.{what} was used after its request ended. The context belongs to one "
                "request; for work that outlives it (a background task) use "
                "`anyio.CancelScope(shield=True)` or no scope at all."
            )
        if threading.get_ident() != state.loop_thread:
            raise RuntimeError(
                f"ctx.{what} was used from a worker thread. Cancel scopes live on the event "
                "loop; in a sync endpoint read `ctx.is_cancelled` (or call `ctx.check()`) "
                "and return early instead."
            )
