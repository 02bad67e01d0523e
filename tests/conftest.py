from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import uvloop

from tests._context_apps import ENTRY_POINTS, EntryPoint

Backend = str | tuple[str, dict[str, Any]]

BACKENDS: list[Any] = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="asyncio+uvloop"),
    pytest.param("trio", id="trio"),
]
if sys.version_info >= (3, 12):  # asyncio.eager_task_factory is new in 3.12

    def _eager_event_loop() -> asyncio.AbstractEventLoop:
        loop = asyncio.new_event_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        return loop

    BACKENDS.insert(
        2, pytest.param(("asyncio", {"loop_factory": _eager_event_loop}), id="asyncio+eager")
    )


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Backend:
    """Every async test runs on each of these, as anyio's own suite does.

    uvloop and the eager task factory are where the package's event-loop shortcuts
    (``loop.call_later``, ``loop.create_task`` in ``_backend.py``) could behave differently.
    """
    backend: Backend = request.param
    return backend


@pytest.fixture(params=ENTRY_POINTS)
def entry(request: pytest.FixtureRequest) -> EntryPoint:
    """Every way into a request's context: a test that takes ``entry`` runs once per way.

    As Starlette's ``test_client_factory``: the test builds its app through the fixture
    (``entry.router()``, ``entry.app(work)``), so the promise is written once.
    """
    return EntryPoint(request.param)
