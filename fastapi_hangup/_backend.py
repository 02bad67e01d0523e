"""What anyio has no portable (or cheap enough) API for, a few lines per backend.

The watcher is armed lazily: a request that is over within ``ARM_DELAY`` (asyncio) never pays
for a task. That needs "run this callback a moment from now" and "start a task outside any
task group, cancel it and wait for it cheaply", which anyio does not offer. And a cancel scope
is made per request, so the backend lookup ``anyio.CancelScope()`` does on every call is
skipped. And the dependency must know whether its cancel scope is the innermost one still
open, which anyio does not say either. And anyio's cancel scopes are level-triggered, while
the asyncio ecosystem's cleanup code is written for ``Task.cancel()``'s one
``CancelledError``: the scope ``guard_scope()`` makes delivers a cancellation once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

import anyio


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop in this thread: we run on trio
        return None


#: Seconds a guarded request runs, at least, before its watcher starts (asyncio): between
#: this and twice this. A request that ends sooner (a cache hit, a quick query) never starts
#: one: that saves ~10 µs of a task's life. A hang-up in that first moment is seen when the
#: watcher starts.
ARM_DELAY = 0.001


class Arming:
    """A callback ``arm_later()`` will run; ``cancel()`` lets go of it (and of all it holds).

    A request that ends before its watcher is armed cancels its arming, so its guard, its
    ASGI scope and its request are freed when it ends, not with the timer's next generation:
    held that 1 to 3 ms longer, the objects of some 30 requests stay alive at once under load,
    and a server spent 8 to 13 µs more per request (wrk, uvicorn) than their instructions say.
    """

    __slots__ = ("callback",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def cancel(self) -> None:
        """Do not run the callback (the work is over)."""
        self.callback = None

    def run(self) -> None:
        """Run the callback, unless cancelled."""
        callback = self.callback
        if callback is not None:
            self.callback = None
            callback()


def arm_later(callback: Callable[[], None]) -> Arming:
    """Run ``callback`` on the event loop between ``ARM_DELAY`` and twice that from now.

    One timer per event loop serves every request, as aiohttp coalesces its timeouts: a
    timer of its own would cost each request ~1.5 µs to schedule and cancel. Cancel the
    returned ``Arming`` when the work is over first.

    trio has no timers outside tasks: there ``callback`` runs once the current task next
    yields to the scheduler.
    """
    arming = Arming(callback)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop in this thread: we run on trio
        import trio

        trio.lowlevel.current_trio_token().run_sync_soon(arming.run)
        return arming
    armer: _Armer | None = getattr(_armers, "armer", None)
    if armer is None or armer.loop is not loop:  # each thread runs one loop at a time
        armer = _armers.armer = _Armer(loop)
    armer.waiting.append(arming)
    if armer.timer is None:
        armer.timer = loop.call_later(ARM_DELAY, armer.tick)
    return arming


class _Armer:
    """The armings ``arm_later()`` holds for one event loop, in two generations.

    Every ``ARM_DELAY`` the timer runs the armings that were already waiting at its last
    run, so each one waits at least a full period; it stops while none wait.
    """

    __slots__ = ("due", "loop", "timer", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: list[Arming] = []  # added since the timer last ran
        self.due: list[Arming] = []  # waiting at its last run: run at the next
        self.timer: asyncio.TimerHandle | None = None

    def tick(self) -> None:
        due, self.due, self.waiting = self.due, self.waiting, []
        self.timer = self.loop.call_later(ARM_DELAY, self.tick) if self.due else None
        for arming in due:
            try:
                arming.run()  # nothing, if the work ended first
            except Exception as exc:  # the others must still run; the loop reports it
                self.loop.call_exception_handler({"message": "arming failed", "exception": exc})


_armers = threading.local()


class Task(Protocol):
    """A task ``spawn()`` started: ``asyncio.Task`` on asyncio, ``_TrioTask`` on trio."""

    def cancel(self) -> object:
        """Cancel the task at its next (or its current) wait."""

    def done(self) -> bool:
        """Whether the task has finished."""


def spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> Task:
    """Start ``func()`` as a task of its own, outside any task group, and return it.

    The caller owns the task's lifetime: ``func`` must never raise (it returns when it is
    cancelled too), and the caller must cancel it and ``join()`` it before the request ends
    (the arbiter does both). On asyncio this is ``loop.create_task()`` and ``Task.cancel()``
    themselves: no anyio scope, event or delivery loop, which cost a guarded request that
    awaits about 20 µs.
    """
    loop = _running_loop()
    if loop is not None:
        return loop.create_task(func())
    return _TrioTask(func)


async def join(task: Task, scope: anyio.CancelScope | None = None) -> None:
    """Wait until ``task`` has finished; a cancellation of the caller waits for it too.

    ``scope`` may be the guard's, which the caller sits in and leaves right after: on asyncio
    the wait holds its deliveries back (``hold_deliveries``) instead of entering a shielded
    scope of its own, which would cost another ~3 µs.
    """
    if task.done():
        return
    if scope is not None and hold_deliveries(scope):
        await cast("asyncio.Task[None]", task)
        return
    with new_cancel_scope(shield=True):
        if isinstance(task, _TrioTask):
            await task.finished.wait()
        else:
            await cast("asyncio.Task[None]", task)


class _TrioTask:
    """A trio system task in a cancel scope of its own, so that it can be cancelled alone."""

    __slots__ = ("_cancel_scope", "finished")

    def __init__(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        import trio

        self._cancel_scope = trio.CancelScope()
        self.finished = trio.Event()
        trio.lowlevel.spawn_system_task(self._run, func)

    async def _run(self, func: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            with self._cancel_scope:
                await func()
        finally:
            self.finished.set()

    def cancel(self) -> None:
        self._cancel_scope.cancel()

    def done(self) -> bool:
        return self.finished.is_set()


_scope_classes: dict[bool, type[anyio.CancelScope]] = {}


def new_cancel_scope(*, shield: bool = False) -> anyio.CancelScope:
    """Return ``anyio.CancelScope(shield=...)``, minus anyio's per-call backend lookup (~1 µs)."""
    on_asyncio = _running_loop() is not None
    cls = _scope_classes.get(on_asyncio)
    if cls is None:
        cls = _scope_classes[on_asyncio] = type(anyio.CancelScope())
    return cls(shield=shield)


def is_innermost(cancel_scope: anyio.CancelScope) -> bool:
    """Whether ``cancel_scope`` is the current task's innermost open cancel scope.

    Exiting any other one corrupts the task's scope stack. On asyncio, anyio's scope knows
    the open scopes entered inside it and its task; on trio, trio's per-task state says
    (checked on anyio 4.16, trio 0.35).
    """
    if _once_class is not None and isinstance(cancel_scope, _once_class):
        return not cancel_scope._child_scopes and (  # type: ignore[attr-defined]
            cancel_scope._host_task is asyncio.current_task()  # type: ignore[attr-defined]
        )
    if _running_loop() is not None:
        from anyio._backends._asyncio import _task_states

        state = _task_states.get(asyncio.current_task())  # type: ignore[arg-type]
        return state is not None and state.cancel_scope is cancel_scope
    import trio

    original = cancel_scope._CancelScope__original  # type: ignore[attr-defined]
    status = trio.lowlevel.current_task()._cancel_status
    return status is not None and status._scope is original


#: Seconds the work's cleanup may await after its one cancellation (asyncio), before every
#: further ``await`` is cancelled too: work that swallows the cancellation still stops.
CLEANUP_TIMEOUT = 5.0

_once_class: type[anyio.CancelScope] | None = None


def guard_scope() -> anyio.CancelScope:
    """The cancel scope a guard runs the work in: on asyncio, one that delivers once.

    When it is cancelled (a hang-up, a deadline, the application), or a scope around it is
    (a server shutting down), the cancellation reaches the work's task as one
    ``CancelledError`` at its next ``await``, as ``Task.cancel()`` does. From then on the
    scope holds: to anyio it looks like a shielded scope nobody cancelled, so ``finally``
    blocks, ``async with`` exits and libraries that clean up and re-raise can await, and
    their own timeouts are their own. Shields inside it keep their meaning: while the task
    sits in one, nothing is delivered, and the one cancellation comes after it. After
    ``CLEANUP_TIMEOUT`` seconds it lets go and delivers on every ``await``, as anyio does.
    (While it holds, its ``cancel_called`` reads ``False`` and its ``shield`` ``True``.)

    On trio it is a plain anyio scope: trio's cancellation stays level-triggered, as trio
    code expects. Relies on anyio's asyncio ``CancelScope`` internals (checked on anyio
    4.16, the lowest version the package accepts; pinned by tests/test_backend_internals.py).
    One scope rather than a plain one with a one-delivery scope inside: each anyio scope
    costs a request ~3 µs.
    """
    global _once_class
    if _once_class is not None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return new_cancel_scope()  # trio's
        return _once_class()
    if _running_loop() is None:
        return new_cancel_scope()
    _once_class = _make_once_class()
    return _once_class()


def _make_once_class() -> type[anyio.CancelScope]:
    from anyio._backends._asyncio import CancelScope

    class OnceScope(CancelScope):
        # No __init__ or __exit__ of its own, and no slots: a request that is never
        # cancelled pays exactly what an anyio CancelScope costs. These class defaults
        # become instance attributes only when they change.
        _held = False  # the one cancellation has passed (or the guard is leaving)
        _was_cancelled = False  # its cancel() was called: anyio's flag is down while held
        _level = False  # the cleanup's time is up: it delivers on every await, as anyio's
        _to_level: asyncio.TimerHandle | None = None

        def cancel(self, reason: str | None = None) -> None:
            if self._held:
                self._was_cancelled = True  # delivered when the hold ends (or at the exit)
                return
            super().cancel(reason)

        def _deliver_cancellation(self, origin: CancelScope) -> bool:
            if self._held:
                return False
            if self._level:
                return super()._deliver_cancellation(origin)
            task = self._host_task
            if task is None:  # a retry anyio scheduled has come after the exit
                return super()._deliver_cancellation(origin)
            before = task.cancelling()
            retry = super()._deliver_cancellation(origin)
            if task.cancelling() == before:
                return retry  # not delivered yet (a shield inside, or the task is running)
            self._hold()
            self._to_level = asyncio.get_running_loop().call_later(CLEANUP_TIMEOUT, self._let_go)
            return False

        def _hold(self) -> None:
            # Look like a shielded scope that nobody cancelled: anyio's walks up from the
            # scopes inside (their exits, checkpoints, effective deadlines) stop here.
            self._held = True
            if self._cancel_called:
                self._was_cancelled, self._cancel_called = True, False
            if self._cancel_handle is not None:  # the retry anyio scheduled: no more
                self._cancel_handle.cancel()
                self._cancel_handle = None
            self._shield = True

        def _unhold(self) -> None:
            self._held = False
            self._shield = False
            if self._was_cancelled:
                self._cancel_called = True

        def _let_go(self) -> None:
            self._to_level = None
            self._unhold()
            self._level = True
            if self._cancel_called:
                self._deliver_cancellation(self)
            else:
                self._restart_cancellation_in_parent()

    return OnceScope


def cancel_was_called(scope: anyio.CancelScope) -> bool:
    """Whether ``scope.cancel()`` was called, also while a scope ``guard_scope()`` made holds
    (then its ``cancel_called`` reads ``False``, see there)."""
    return scope.cancel_called or bool(getattr(scope, "_was_cancelled", False))


def hold_deliveries(scope: anyio.CancelScope) -> bool:
    """Make a scope ``guard_scope()`` made deliver nothing more; ``False`` on trio's.

    For the guard's last wait before it leaves the scope (whose exit restarts any delivery
    of a cancelled scope around it).
    """
    if _once_class is None or not isinstance(scope, _once_class):
        return False
    _stop_level_timer(scope)
    if not scope._held:  # type: ignore[attr-defined]
        scope._hold()  # type: ignore[attr-defined]
    return True


def leave_guard_scope(scope: anyio.CancelScope, exc: BaseException | None) -> bool:
    """Exit a scope ``guard_scope()`` made; return whether it swallowed ``exc``."""
    if _once_class is not None and isinstance(scope, _once_class):
        if scope._to_level is not None:  # type: ignore[attr-defined]
            _stop_level_timer(scope)
        if scope._held:  # type: ignore[attr-defined]
            scope._unhold()  # type: ignore[attr-defined]  # anyio's exit sees the truth
    if exc is None:
        return bool(scope.__exit__(None, None, None))
    return bool(scope.__exit__(type(exc), exc, exc.__traceback__))


def _stop_level_timer(scope: anyio.CancelScope) -> None:
    timer: asyncio.TimerHandle | None = getattr(scope, "_to_level", None)
    if timer is not None:
        timer.cancel()
        scope._to_level = None  # type: ignore[attr-defined]
