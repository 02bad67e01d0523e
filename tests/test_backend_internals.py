"""The anyio internals ``_backend.once_scope`` relies on, pinned: a new anyio that moves them
fails here, by name, before any promise of tests/test_one_delivery.py breaks."""

from __future__ import annotations

import inspect

import anyio
import anyio.lowlevel
import pytest
from anyio._backends._asyncio import CancelScope

from fastapi_hangup._backend import once_scope


def test_the_asyncio_cancel_scope_delivers_through_an_overridable_method() -> None:
    parameters = list(inspect.signature(CancelScope._deliver_cancellation).parameters)
    assert parameters == ["self", "origin"]
    assert {"_host_task", "_shield", "_cancel_handle"} <= set(CancelScope.__slots__)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_once_scope_is_an_asyncio_cancel_scope(anyio_backend: str) -> None:
    scope = once_scope()
    assert isinstance(scope, CancelScope)
    with anyio.CancelScope() as outer:
        with scope:
            assert scope._host_task is not None
            outer.cancel()
            with pytest.raises(anyio.get_cancelled_exc_class()):
                await anyio.sleep(1)
            await anyio.lowlevel.checkpoint()  # delivered once: the cleanup can await
            assert scope.shield
        await anyio.sleep(1)  # outside the once scope, the cancelled scope delivers again
    assert outer.cancelled_caught


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_gets_no_once_scope(anyio_backend: str) -> None:
    assert once_scope() is None
