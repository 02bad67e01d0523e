"""What anyio has no portable (or cheap enough) API for, a few lines per backend.

The watcher is armed lazily: a request that finishes before its handler first gives control
back to the event loop never pays for a task. That needs "run this callback soon" and "start
a task outside any task group", which anyio does not offer. And a cancel scope is made per
request, so the backend lookup ``anyio.CancelScope()`` does on every call is skipped. And
the dependency must know whether its cancel scope is the innermost one still open, which
anyio does not say either. And anyio's cancel scopes are level-triggered, while the asyncio
ecosystem's cleanup code is written for ``Task.cancel()``'s one ``CancelledError``: the scope
``once_scope()`` makes lets a cancellation through once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

import anyio


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop in this thread: we run on trio
        return None


#: Seconds a guarded request runs before its watcher starts (asyncio). A request that ends
#: sooner (a cache hit, a quick query) never starts one: that saves ~10 µs of a task's life.
#: A hang-up in that first moment is seen when it ends (libuv rounds timers to 1 ms).
ARM_DELAY = 0.001


def call_later(callback: Callable[[], None]) -> asyncio.TimerHandle | None:
    """Run ``callback`` on the event loop ``ARM_DELAY`` seconds from now; return its handle.

    trio has no timers outside tasks: there ``callback`` runs once the current task next
    yields to the scheduler, and there is no handle (``None``).
    """
    loop = _running_loop()
    if loop is not None:
        return loop.call_later(ARM_DELAY, callback)
    import trio

    trio.lowlevel.current_trio_token().run_sync_soon(callback)
    return None


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


async def join(task: Task, once: anyio.CancelScope | None = None) -> None:
    """Wait until ``task`` has finished; a cancellation of the caller waits for it too.

    ``once`` is the scope ``once_scope()`` made, if the caller sits in it and leaves it right
    after: then the wait shields that scope, instead of entering a shielded one of its own
    (another ~3 µs). Its exit restarts any delivery the shield held back.
    """
    if task.done():
        return
    if once is not None:
        _stop_level_timer(once)
        once._shield = True  # type: ignore[attr-defined]
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

    Exiting any other one corrupts the task's scope stack. Reads anyio's per-task state on
    asyncio and trio's on trio (checked on anyio 4.16, trio 0.35).
    """
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


def once_scope() -> anyio.CancelScope | None:
    """On asyncio, a cancel scope that lets a cancellation of its parents through once.

    The guard enters it just inside its own cancel scope. When that scope is cancelled (a
    hang-up, a deadline), the cancellation reaches the work's task as one
    ``CancelledError`` at its next ``await``, as ``Task.cancel()`` does; from then on the
    scope shields what follows, so ``finally`` blocks, ``async with`` exits and libraries
    that clean up and re-raise can await. Shields inside it keep their meaning: while the
    task sits in one, nothing is delivered, and the one cancellation comes after it. After
    ``CLEANUP_TIMEOUT`` seconds the shield drops and every ``await`` is cancelled again.

    On trio it returns ``None``: trio's cancellation stays level-triggered, as trio code
    expects. Relies on anyio's asyncio ``CancelScope._deliver_cancellation`` and
    ``_host_task`` (checked on anyio 4.16, the lowest version the package accepts; pinned by
    tests/test_backend_internals.py).
    """
    if _running_loop() is None:
        return None
    global _once_class
    if _once_class is None:
        _once_class = _make_once_class()
    return _once_class()


def _make_once_class() -> type[anyio.CancelScope]:
    from anyio._backends._asyncio import CancelScope

    class OnceScope(CancelScope):
        # No __init__ or __exit__ of its own, and no slots: a request that is never
        # cancelled pays exactly what an anyio CancelScope costs. These class defaults
        # become instance attributes only once the cancellation has passed.
        _passed = False
        _to_level: asyncio.TimerHandle | None = None

        def _deliver_cancellation(self, origin: CancelScope) -> bool:
            if self._passed:  # the cleanup's time is up: level-triggered from now on
                return super()._deliver_cancellation(origin)
            task = self._host_task
            assert task is not None  # anyio delivers only into an active scope
            before = task.cancelling()
            retry = super()._deliver_cancellation(origin)
            if task.cancelling() == before:
                return retry  # not delivered yet (a shield inside, or the task is running)
            self._passed = True
            self._shield = True
            self._to_level = asyncio.get_running_loop().call_later(CLEANUP_TIMEOUT, self._level)
            return False

        def _level(self) -> None:
            self._to_level = None
            self.shield = False  # anyio restarts the delivery from the cancelled parent

    return OnceScope


def leave_once(once: anyio.CancelScope, exc: BaseException | None) -> None:
    """Exit a scope ``once_scope()`` made (it never swallows: it only passes a cancellation
    on), and drop its pending switch to level-triggered delivery."""
    _stop_level_timer(once)
    once.__exit__(type(exc) if exc else None, exc, exc.__traceback__ if exc else None)


def _stop_level_timer(once: anyio.CancelScope) -> None:
    timer: asyncio.TimerHandle | None = getattr(once, "_to_level", None)
    if timer is not None:
        timer.cancel()
        once._to_level = None  # type: ignore[attr-defined]
