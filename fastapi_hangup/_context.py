"""The per-request context object that handlers receive."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_process
import anyio.to_thread
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from fastapi_hangup._arbiter import ReceiveArbiter
from fastapi_hangup._backend import call_soon, new_cancel_scope
from fastapi_hangup._callbacks import CallbackHandle, run_callbacks
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._log import log_stopped
from fastapi_hangup._options import DEFAULTS, CancelOptions

T = TypeVar("T")

#: Where the one context of a request lives in the ASGI scope, so every entry point shares it.
SCOPE_KEY = "fastapi_hangup.context"
#: An optional callback in the ASGI scope that is told about the context once it exists
#: (``fastapi_hangup.testing`` uses it to hand the context to your test).
OBSERVER_KEY = "fastapi_hangup.observer"


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
    context. When the client hangs up while the endpoint works, :attr:`is_cancelled` turns
    true and :attr:`scope` is cancelled, so the endpoint gets the backend's cancellation
    exception (``asyncio.CancelledError`` or ``trio.Cancelled``) at its next ``await``.
    """

    __slots__ = (
        "_arbiter",
        "_asgi_scope",
        "_budget",
        "_callbacks",
        "_cause",
        "_covers_response",
        "_deadline",
        "_deadline_hit",
        "_finished",
        "_hung_up_at",
        "_loop_deadline",
        "_loop_thread",
        "_options",
        "_raw_receive",
        "_scope",
        "_started_at",
        "_working",
    )

    def __init__(
        self,
        asgi_scope: Scope,
        receive: Receive,
        options: CancelOptions = DEFAULTS,
        *,
        covers_response: bool = False,
    ) -> None:
        self._asgi_scope = asgi_scope
        self._covers_response = covers_response
        self._raw_receive = receive
        self._options = options
        self._arbiter: ReceiveArbiter | None = None  # made when first needed: most requests never
        self._callbacks: list[CallbackHandle] | None = None
        self._scope = new_cancel_scope()
        self._cause: CancelCause | None = None
        self._working = True
        self._finished = False
        self._started_at = time.monotonic()
        self._budget: float | None = None
        self._deadline: float | None = None
        self._loop_deadline = math.inf  # the same instant on the event loop's clock
        self._deadline_hit = False
        self._hung_up_at: float | None = None
        self._loop_thread = threading.get_ident()

    __signature__ = _NoSignature()

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        """A bare ``ctx: CancelOnDisconnect`` parameter is no request field: say what is."""
        raise TypeError(_NOT_A_DEPENDENCY)

    def __repr__(self) -> str:
        cause = self.cause
        state = cause.value if cause else "finished" if self._finished else "active"
        return f"<CancelOnDisconnect {state} {self._asgi_scope.get('path', '?')!r}>"

    @property
    def cause(self) -> CancelCause | None:
        """Why the work was cancelled, or ``None`` while the request is alive.

        Safe to read from any thread. A passed deadline shows here at once, even before the
        event loop has delivered the cancellation.
        """
        deadline = self._deadline
        if self._cause is None and self._working and deadline and time.monotonic() >= deadline:
            return CancelCause.DEADLINE_EXCEEDED
        return self._cause

    @property
    def is_cancelled(self) -> bool:
        """Whether the work was cancelled (``cause is not None``). Safe to read from any thread.

        A sync endpoint (which runs in a worker thread that Python cannot stop) reads this to
        return early.
        """
        return self.cause is not None

    @property
    def covers_response(self) -> bool:
        """Whether the guard also covers the response body (the route class), not just the work."""
        return self._covers_response

    @property
    def hung_up(self) -> bool:
        """Whether the client has gone (the one cause after which nothing may be sent)."""
        return self._cause is CancelCause.CLIENT_DISCONNECTED

    @property
    def scope(self) -> anyio.CancelScope:
        """The anyio cancel scope around the endpoint's work; a hang-up cancels it.

        Raises:
            RuntimeError: if the request is over or you are in a worker thread.
        """
        self._check_usable("scope")
        return self._scope

    @property
    def deadline(self) -> float | None:
        """When the request's time budget runs out, in ``time.monotonic()`` seconds, or ``None``."""
        return self._deadline

    def remaining(self) -> float:
        """Seconds left of the time budget (``math.inf`` without one, never below zero).

        Pass it on to downstream calls, e.g. ``httpx.get(url, timeout=ctx.remaining())``.
        """
        if self._deadline is None:
            return math.inf
        return max(0.0, self._deadline - time.monotonic())

    def check(self) -> None:
        """Raise if the work was cancelled; call it between steps of a sync endpoint.

        Works in any thread: FastAPI's worker thread, ``ctx.run_sync``, your own.

        Raises:
            ClientDisconnected: the client hung up (or the server is shutting down).
            DeadlineExceeded: the time budget ran out.
        """
        cause = self.cause
        if cause is CancelCause.DEADLINE_EXCEEDED:
            self._cause = cause  # the request ends because of it, even if a handler answers
            raise DeadlineExceeded(self._budget or 0.0)
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
        """
        handle = CallbackHandle(callback, timeout or self._options.callback_timeout)
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(handle)
        return handle

    async def run_sync(self, func: Callable[..., T], *args: Any, abandon: bool = False) -> T:
        """Run a blocking call in a worker thread; the thread can call :meth:`check`.

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
        budget = self._options.budget(scope)
        if budget is not None:
            self._budget = budget
            self._deadline = self._started_at + budget
            self._loop_deadline = self._scope.deadline = anyio.current_time() + budget
        self._scope.__enter__()
        call_soon(self._watch)

    async def receive(self) -> Message:
        """The request's ``receive`` as every reader must see it once watching may start."""
        return await self._get_arbiter().receive()

    def hang_up(self) -> None:
        """The client went away: cancel the work (after the grace period), unless it is over."""
        if self._working and self._cause is None:
            self._hung_up_at = time.monotonic()
            self._cause = CancelCause.CLIENT_DISCONNECTED
            if self._options.grace:
                grace_ends = anyio.current_time() + self._options.grace
                self._scope.deadline = min(self._scope.deadline, grace_ends)
            else:
                self._scope.cancel()

    def end_work(self) -> None:
        """The handler's work is over: stop watching, so later disconnects mean nothing.

        The deadline (and a grace period's) is disarmed too: what runs after the work, the
        response body under the dependency or BackgroundTasks, is not the work's to cancel.
        """
        if self._working:
            self._working = False
            if self._deadline is not None:
                # Either clock may say so first: uvloop fires timers up to ~0.1 ms early.
                self._deadline_hit = (
                    time.monotonic() >= self._deadline
                    or anyio.current_time() >= self._loop_deadline
                )
            if self._scope.deadline != math.inf:  # a budget or a grace period is running
                self._scope.deadline = math.inf
        if self._arbiter is not None:
            self._arbiter.stop()

    async def close(self, exc: BaseException | None) -> CancelCause | None:
        """End the work, wait for the watcher task to go, and leave :attr:`scope`.

        Runs the ``on_cancel`` callbacks if the work was cancelled.

        Returns:
            The cause, if the request ends because of it: the scope swallowed its
            cancellation, ``ctx.check()`` raised, or the client left while the endpoint
            finished. The caller then ends the request accordingly. ``None`` otherwise (also
            for a cancellation from outside, which must propagate).

        Raises:
            RuntimeError: the application cancelled :attr:`scope` itself.
        """
        self.end_work()
        deadline_passed = self._deadline_hit
        if self._arbiter is not None:
            await self._arbiter.wait_stopped()
        self._finished = True
        # Break the scope <-> context cycle, so both die by reference counting instead of
        # waiting for the garbage collector (measured: ~5 us per request).
        self._asgi_scope.pop(SCOPE_KEY, None)
        if exc is None:
            self._scope.__exit__(None, None, None)
            # The client left, or ctx.check() raised DeadlineExceeded and a handler answered.
            ends = self._cause is not None
        elif self._scope.__exit__(type(exc), exc, exc.__traceback__):
            if self._cause is None and not deadline_passed:
                raise RuntimeError(
                    "ctx.scope was cancelled by the application, not by a hang-up, so the "
                    "endpoint produced no response. To give up on a piece of work, wrap just "
                    "that piece in `with anyio.move_on_after(...)` or your own "
                    "`anyio.CancelScope()`."
                ) from exc
            ends = True
        elif isinstance(exc, anyio.get_cancelled_exc_class()):
            self._cause = self._cause or CancelCause.SERVER_SHUTDOWN
            ends = False  # a cancellation from outside must propagate
        else:  # ctx.check() raised, or a body reader got the replayed disconnect first
            ends = isinstance(exc, ClientDisconnected | DeadlineExceeded | ClientDisconnect) and (
                self._cause is not None or deadline_passed
            )
        if ends and self._cause is None:  # only a passed deadline gets here
            self._cause = CancelCause.DEADLINE_EXCEEDED
        if self._cause is not None and self._callbacks:
            await run_callbacks(self._callbacks)
        return self._cause if ends else None

    def ending_error(self, cause: CancelCause) -> Exception:
        """Log the abandoned request once and return the exception that ends it."""
        if cause is CancelCause.DEADLINE_EXCEEDED:
            ran = time.monotonic() - self._started_at
            log_stopped(self._asgi_scope, cause, 504, "Deadline Exceeded", ran)
            return DeadlineExceeded(self._budget or 0)
        ran = (self._hung_up_at or time.monotonic()) - self._started_at
        log_stopped(self._asgi_scope, cause, 499, "Client Closed Request", ran)
        return ClientDisconnected()

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
                "loop; in a sync endpoint read `ctx.is_cancelled` (or call `ctx.check()`) "
                "and return early instead."
            )
