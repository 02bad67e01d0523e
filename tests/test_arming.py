"""``_backend.arm_later``: one timer per event loop arms every request's watcher."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
import uvloop

from fastapi_hangup import _backend

pytestmark = pytest.mark.anyio


ASYNCIO_LOOPS = [  # trio has no timers outside tasks: there it arms at the next yield
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="asyncio+uvloop"),
]


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS)
async def test_each_callback_waits_a_full_period_and_one_that_fails_stops_none(
    anyio_backend: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_backend, "ARM_DELAY", 0.05)
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    ran: dict[str, float] = {}
    added: dict[str, float] = {}

    def callback(name: str, fail: bool = False) -> Any:
        def run() -> None:
            ran[name] = loop.time()
            if fail:
                raise ValueError(name)

        added[name] = loop.time()
        return run

    try:
        _backend.arm_later(callback("first", fail=True))
        await anyio.sleep(0.03)  # the timer is running: these two join the same generation
        _backend.arm_later(callback("second", fail=True))
        _backend.arm_later(callback("third"))
        with anyio.fail_after(5):
            while len(ran) < 3:
                await anyio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)

    for name in ("first", "second", "third"):
        # uvloop may fire a timer up to a millisecond early: a generous margin below the period
        assert ran[name] - added[name] >= 0.05 - 0.005, name
    assert sorted(str(c["exception"]) for c in reported) == ["first", "second"]
    await anyio.sleep(0.15)
    armer = _backend._armers.armer
    assert armer.timer is None  # it stops while nothing waits
    assert not armer.waiting
    assert not armer.due
