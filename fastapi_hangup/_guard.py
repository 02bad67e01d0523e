"""``RequestGuard``: one guarded request's lifecycle, used by every entry point the same way.

The dependency, the decorator and the route class each make (or find) the request's one
guard and run the work inside it, the same way (the dependency from FastAPI's exit stacks)::

    guard = RequestGuard(scope, receive, options)
    guard.enter()
    try:
        ...  # the work; readers of the request go through guard.receive
    except BaseException as exc:
        cause = await guard.leave(exc)
        if cause is None:
            raise  # not the request's end: whatever the work raised goes on
        raise guard.ending_error(cause) from None
    cause = await guard.leave(None)
    if cause is not None:
        raise guard.ending_error(cause)

(An async context manager, or a ``run(call)`` coroutine, would say it in two lines; but a
coroutine around the work costs every in-flight request ~300 bytes and ~3 k instructions,
measured with ``benchmarks/memory.py`` and callgrind.)

On the way in it publishes itself in the ASGI scope (so entry points that meet later share
it), starts the clocks and enters the cancel scope; the watcher is armed lazily, a moment
after the work starts (``_backend.arm_later``). ``end_work()`` says the work is over (the
endpoint returned, or the response is complete): later disconnects mean nothing. On the way out it
joins the watcher, leaves the cancel scope, runs ``on_cancel`` callbacks, reports the stop
once (log record, ``on_stop`` hook, span, metrics: ``_report.py``) and raises what ends an
abandoned request: [`ClientDisconnected`][fastapi_hangup.ClientDisconnected] after a hang-up,
[`DeadlineExceeded`][fastapi_hangup.DeadlineExceeded] (504) after a passed deadline.
"""

from __future__ import annotations

import math
import time

import anyio
from fastapi import Request
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

from fastapi_hangup._arbiter import ReceiveArbiter
from fastapi_hangup._backend import (
    Arming,
    arm_later,
    cancel_was_called,
    guard_scope,
    leave_guard_scope,
)
from fastapi_hangup._callbacks import run_callbacks
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._fastapi import adopt_request
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._quiet import QUIET_HANDLER
from fastapi_hangup._report import report
from fastapi_hangup._state import WorkState

#: Where the one guard of a request lives in the ASGI scope, so every entry point shares it.
SCOPE_KEY = "fastapi_hangup.guard"
#: An optional callback in the ASGI scope that is told about the context once it exists
#: (``fastapi_hangup.testing`` uses it to hand the context to your test).
OBSERVER_KEY = "fastapi_hangup.observer"

_STOPPED = (ClientDisconnected, DeadlineExceeded, ClientDisconnect)
_TIMER_SLACK = 0.001  # seconds a timer may fire before its deadline
_APP_CANCELLED = (
    "ctx.scope was cancelled by the application, not by a hang-up, so the endpoint produced "
    "no response. To give up on a piece of work, wrap just that piece in "
    "`with anyio.move_on_after(...)` or your own `anyio.CancelScope()`."
)


def current_guard(scope: Scope) -> RequestGuard | None:
    """The guard of the request, if an entry point has made one."""
    guard: RequestGuard | None = scope.get(SCOPE_KEY)  # no cast(): a call on the hot path
    return guard


class RequestGuard(WorkState):
    """Owns a guarded request: its state, watcher, clocks, callbacks and log record.

    Args:
        scope: the request's ASGI scope.
        receive: the raw ASGI ``receive``; once the work runs, read through ``receive``.
        options: the route's settings (deadline, grace, ...).
        request: the ``Request`` FastAPI reads, when the guard is made inside it (the
            dependency, the decorator). Every reader of it (``request.body()``,
            ``.stream()``, ``.form()``, ``is_disconnected()``) goes through the guard from
            then on, so the watcher can never steal a body message; and the quiet handler
            is in place for the ending error. Without one, the guard is made around the
            route (the route class): it sees the raw ``receive`` and ``send``, and covers
            the response body too, not only the work.
    """

    __slots__ = (
        "_arbiter",
        "_arming",
        "_body_read",
        "_deadline_hit",
        "_ending_id",
        "_loop_deadline",
        "_raw_receive",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        options: CancelOptions = DEFAULTS,
        request: Request | None = None,
    ) -> None:
        WorkState.__init__(self, scope, options, guard_scope())
        self._raw_receive = receive
        # Whether the body was read before the guard existed (FastAPI reads body parameters
        # before it solves dependencies): then the watcher may start without asking.
        self._body_read = request is not None and adopt_request(
            request, self.receive, ClientDisconnected, QUIET_HANDLER
        )
        self._arbiter: ReceiveArbiter | None = None  # made when first needed: most requests never
        self._arming: Arming | None = None
        self._loop_deadline = math.inf  # the deadline on the event loop's clock
        self._deadline_hit = False
        # Which exception the guard raised to end the request, by id: holding the exception
        # itself would tie the guard to its traceback's frames in a cycle.
        self._ending_id: int | None = None

    @property
    def hung_up(self) -> bool:
        """Whether the client has gone (the one cause after which nothing may be sent)."""
        return self.cause is CancelCause.CLIENT_DISCONNECTED

    def unwrapped(self, exc: BaseException | None) -> Exception | None:
        """The exception that ended the request, if ``exc`` is a group of it alone.

        A yield dependency that holds a task group across its ``yield`` wraps whatever
        passes it in an ``ExceptionGroup``, which no exception handler matches.
        """
        ending_id = self._ending_id
        if ending_id is None or not isinstance(exc, BaseExceptionGroup):
            return None
        match, rest = exc.split(lambda e: id(e) == ending_id)
        if match is None or rest is not None:
            return None
        while isinstance(match, BaseExceptionGroup):  # a group of groups of the one exception
            match = match.exceptions[0]
        return match if isinstance(match, Exception) else None

    def enter(self) -> None:
        """Enter the guard without awaiting (for FastAPI's exit stacks); see the module doc.

        Call it in the task that runs the work; the exit must follow in the same task.
        """
        scope = self.asgi_scope
        scope[SCOPE_KEY] = self
        observer = scope.get(OBSERVER_KEY)
        if observer is not None:
            observer(self.ctx)
        options = self.options
        if options.deadline is not None or options.deadline_header is not None:
            budget = options.budget(scope)
            if budget is not None:
                self.budget = budget
                self.deadline = self.started_at + budget
                self._loop_deadline = self.cancel_scope.deadline = anyio.current_time() + budget
        self.cancel_scope.__enter__()
        self._arming = arm_later(self._watch)

    async def receive(self) -> Message:
        """The request's ``receive`` as every reader must see it once watching may start."""
        return await self._get_arbiter().receive()

    def hang_up(self) -> None:
        """The client went away: cancel the work (after the grace period), unless it is over."""
        if self.working and self.cause is None:
            self.hung_up_at = time.monotonic()
            self.cause = CancelCause.CLIENT_DISCONNECTED
            cancel_scope = self.cancel_scope
            grace = self.options.grace
            if grace:
                grace_ends = anyio.current_time() + grace
                cancel_scope.deadline = min(cancel_scope.deadline, grace_ends)
            else:
                cancel_scope.cancel()

    def end_work(self) -> None:
        """The work is over: stop watching, so later disconnects mean nothing.

        The deadline (and a grace period's) is disarmed too: what runs after the work, the
        response body under the dependency or BackgroundTasks, is not the work's to cancel.
        """
        arming = self._arming
        if arming is not None:
            arming.cancel()  # its guard (this) is freed as soon as the request ends
        if self.working:
            self.working = False
            deadline = self.deadline
            if deadline is not None:
                # Either clock may say so first: uvloop fires timers up to ~0.1 ms early.
                self._deadline_hit = (
                    time.monotonic() >= deadline or anyio.current_time() >= self._loop_deadline
                )
                self.cancel_scope.deadline = math.inf
            elif self.cause is not None and self.options.grace:  # a grace period is running
                self.cancel_scope.deadline = math.inf
        if self._arbiter is not None:
            self._arbiter.stop()

    async def leave(self, exc: BaseException | None) -> CancelCause | None:
        """End the work, join the watcher, leave the cancel scope, run the callbacks.

        Returns the cause if the request ends because of it, ``None`` if it goes on as the
        work left it (also after a cancellation from outside, which must propagate).
        """
        self.end_work()
        arbiter = self._arbiter
        if arbiter is not None:
            await arbiter.wait_stopped(self.cancel_scope)
            arbiter.detach()  # no reference back to us (see below)
        self.finished = True
        self._ctx = None  # see WorkState.finish: no cycle through the context
        # Break the scope <-> guard cycle too, so a request that ends normally is freed by
        # reference counting. After a hang-up the cancellation's traceback still links
        # frames in cycles, as any exception through FastAPI's exit stacks does.
        self.asgi_scope.pop(SCOPE_KEY, None)
        swallowed = leave_guard_scope(self.cancel_scope, exc)
        if exc is None:
            if self.cause is None and not (self.deadline_raised or self._deadline_hit):
                return None  # the common case: the work ended by itself, in time
            ends = self._ends_after_return()
        else:
            ends = self._ends_after_error(exc, swallowed)  # it may set the cause
        cause = self.cause
        if cause is None:
            if not ends:
                return None
            cause = self.cause = CancelCause.DEADLINE_EXCEEDED  # only a passed deadline
        if self.callbacks:
            await run_callbacks(self.callbacks)
        if not ends:
            # Cancelled from outside (a server shutting down): the cancellation propagates,
            # nothing is sent, and the stop is still reported, once.
            self._report(cause, None)
            return None
        return cause

    def _ends_after_return(self) -> bool:
        # The client left but the work finished without another await (nobody is left to
        # send the response to, and sending can block: hypercorn over HTTP/2), or check()
        # raised DeadlineExceeded and the endpoint caught it, or the deadline cancelled the
        # scope without reaching this task: it sat in a shield while the deadline cut the
        # tasks of a task group inside, so what it returns may be built from cut work.
        # (trio raises at the task group's exit; asyncio's one delivery found the task in
        # its shield, and a level-triggered retry would only have hit the join.)
        if self.cause is not None or self.deadline_raised:
            return True
        return self._deadline_hit and cancel_was_called(self.cancel_scope)

    def _ends_after_error(self, exc: BaseException, swallowed: bool) -> bool:
        passed = self._deadline_hit or self.deadline_raised
        if swallowed:  # the cancel scope caught its own cancellation
            if self.cause is None and not passed:
                raise RuntimeError(_APP_CANCELLED) from exc
            return True
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            self.cause = self.cause or CancelCause.SERVER_SHUTDOWN
            return False  # a cancellation from outside must propagate
        # ctx.check() raised, or a body reader got the replayed disconnect first (possibly
        # wrapped by a yield dependency's task group on the way).
        if isinstance(exc, BaseExceptionGroup):
            stopped = exc.split(_STOPPED)[1] is None
        else:
            stopped = isinstance(exc, _STOPPED)
        if isinstance(exc, TimeoutError) and self._at_deadline():
            return True  # a timeout of the work's own, set to what the budget had left
        return stopped and (self.cause is not None or passed)

    def _at_deadline(self) -> bool:
        # `anyio.fail_after(ctx.remaining())` ends where the budget does, and its timer may
        # fire a little before the guard's own (uvloop runs timers up to ~0.1 ms early).
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline - _TIMER_SLACK

    def ending_error(self, cause: CancelCause) -> Exception:
        """Report the abandoned request once and return the exception that ends it."""
        error: Exception
        if cause is CancelCause.DEADLINE_EXCEEDED:
            self._report(cause, 504)
            error = DeadlineExceeded(self.budget or 0)
        else:
            self._report(cause, 499)
            error = ClientDisconnected()
        self._ending_id = id(error)
        return error

    def _report(self, cause: CancelCause, status: int | None) -> None:
        now = time.monotonic()
        since = self.hung_up_at if cause is CancelCause.CLIENT_DISCONNECTED else None
        if cause is CancelCause.DEADLINE_EXCEEDED:
            since = self.deadline
        report(
            self.asgi_scope,
            cause,
            status,
            work=now - self.started_at,
            hang_up=None if self.hung_up_at is None else self.hung_up_at - self.started_at,
            latency=None if since is None else max(0.0, now - since),
        )

    def _watch(self) -> None:
        if self.working and not self._awaits_continue():
            self._get_arbiter().arm()

    def _awaits_continue(self) -> bool:
        # uvicorn and granian answer `Expect: 100-continue` when the app first calls
        # receive(): the watcher must not, or a client is invited to upload a body the
        # endpoint never reads. Such a request is watched once a reader asks for the body.
        if self._body_read or (self._arbiter is not None and self._arbiter.asked):
            return False
        headers = self.asgi_scope.get("headers", ())
        return any(k == b"expect" and v.lower() == b"100-continue" for k, v in headers)

    def _get_arbiter(self) -> ReceiveArbiter:
        if self._arbiter is None:
            self._arbiter = ReceiveArbiter(self._raw_receive, self.hang_up)
            if not self.working:
                self._arbiter.stop()
        return self._arbiter
