"""The anyio internals ``_backend.guard_scope`` relies on, pinned: a new anyio that moves them
fails here, by name, before any promise of tests/test_one_delivery.py breaks."""

from __future__ import annotations

import inspect

import anyio
import anyio.lowlevel
import pytest
from anyio._backends._asyncio import CancelScope

from fastapi_hangup._backend import guard_scope, is_innermost, leave_guard_scope


def test_the_asyncio_cancel_scope_delivers_through_an_overridable_method() -> None:
    parameters = list(inspect.signature(CancelScope._deliver_cancellation).parameters)
    assert parameters == ["self", "origin"]
    slots = {"_host_task", "_shield", "_cancel_called", "_cancel_handle", "_timeout_handle"}
    slots |= {"_child_scopes"}  # is_innermost() reads it
    assert slots <= set(CancelScope.__slots__)
    assert list(inspect.signature(CancelScope.cancel).parameters) == ["self", "reason"]
    assert callable(CancelScope._restart_cancellation_in_parent)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("cancelled", ["itself", "a scope around it"])
async def test_the_guard_scope_is_an_asyncio_cancel_scope_that_delivers_once(
    anyio_backend: str, cancelled: str
) -> None:
    scope = guard_scope()
    assert isinstance(scope, CancelScope)
    with anyio.CancelScope() as outer:
        scope.__enter__()
        assert scope._host_task is not None
        (scope if cancelled == "itself" else outer).cancel()
        with pytest.raises(anyio.get_cancelled_exc_class()) as caught:
            await anyio.sleep(1)
        await anyio.lowlevel.checkpoint()  # delivered once: the cleanup can await
        with anyio.move_on_after(0.01) as own:  # and a timeout inside is its own
            await anyio.sleep(1)
        assert own.cancelled_caught
        assert scope._cancel_handle is None  # no retry is pending
        assert leave_guard_scope(scope, caught.value) is (cancelled == "itself")
        if cancelled == "a scope around it":
            await anyio.sleep(1)  # outside the guard's scope, the cancelled one delivers again
    assert (scope if cancelled == "itself" else outer).cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_a_plain_scope(anyio_backend: str) -> None:
    assert type(guard_scope()) is type(anyio.CancelScope())


async def test_innermost_means_no_open_scope_inside_and_the_same_task(anyio_backend: str) -> None:
    scope = guard_scope()
    scope.__enter__()
    assert is_innermost(scope)
    with anyio.CancelScope():  # noqa: ASYNC100  (no await: only its being open counts)
        assert not is_innermost(scope)
    async with anyio.create_task_group() as tg:  # its scope, and the task's, are inside
        assert not is_innermost(scope)
        seen: list[bool] = []

        async def elsewhere() -> None:
            seen.append(is_innermost(scope))

        tg.start_soon(elsewhere)
    assert seen == [False]
    assert is_innermost(scope)
    leave_guard_scope(scope, None)
