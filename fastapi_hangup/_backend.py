"""What anyio has no portable (or cheap enough) API for, a few lines per backend.

The watcher is armed lazily: a request that finishes before its handler first gives control
back to the event loop never pays for a task. That needs "run this callback soon" and "start
a task outside any task group", which anyio does not offer. And a cancel scope is made per
request, so the backend lookup ``anyio.CancelScope()`` does on every call is skipped. And
the dependency must know whether its cancel scope is the innermost one still open, which
anyio does not say either.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import anyio


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # no asyncio loop in this thread: we run on trio
        return None


def call_soon(callback: Callable[[], None]) -> None:
    """Run ``callback`` on the event loop once the current task next yields to it."""
    loop = _running_loop()
    if loop is not None:
        loop.call_soon(callback)
        return
    import trio

    trio.lowlevel.current_trio_token().run_sync_soon(callback)


def spawn(func: Callable[[], Coroutine[Any, Any, None]]) -> object:
    """Start ``func()`` as a task of its own and return a reference that keeps it alive.

    The caller owns the task's lifetime: ``func`` must never raise, and the caller must stop
    it and wait for it before the request ends (the arbiter does both).
    """
    loop = _running_loop()
    if loop is not None:
        return loop.create_task(func())
    import trio

    return trio.lowlevel.spawn_system_task(func)


_scope_classes: dict[bool, type[anyio.CancelScope]] = {}


def new_cancel_scope() -> anyio.CancelScope:
    """Return ``anyio.CancelScope()``, minus anyio's per-call backend lookup (it adds ~1 µs)."""
    on_asyncio = _running_loop() is not None
    cls = _scope_classes.get(on_asyncio)
    if cls is None:
        cls = _scope_classes[on_asyncio] = type(anyio.CancelScope())
    return cls()


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
