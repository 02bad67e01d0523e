"""The "Stopping work downstream" page's examples: examples/downstream.py, downstream_cpu.py."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from examples import downstream, downstream_cpu
from fastapi_hangup import DEFAULT_DEADLINE_HEADER, CancelCause, forward_deadline
from fastapi_hangup.testing import HangUpClient, assert_cancelled

pytestmark = pytest.mark.anyio


@pytest.fixture
async def inventory_client() -> AsyncIterator[httpx.AsyncClient]:
    """What the orders service's lifespan sets up, with inventory served in memory."""
    transport = httpx.ASGITransport(app=downstream.inventory)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://inventory",
        event_hooks={"request": [forward_deadline]},
    ) as client:
        downstream.clients["inventory"] = client
        yield client
    downstream.clients.clear()


async def test_the_callers_budget_reaches_the_downstream_service(
    inventory_client: httpx.AsyncClient,
) -> None:
    result = await HangUpClient(downstream.app).get(
        "/orders/o-1", headers={DEFAULT_DEADLINE_HEADER: "800"}
    )

    assert result.status_code == 200, result.body
    stock = json.loads(result.body)["stock"]
    assert stock["item"] == "o-1"
    assert 0.5 < stock["budget_left"] < 0.8  # what was left of the 800 ms, less the hop


async def test_without_a_callers_header_the_callers_own_budget_travels(
    inventory_client: httpx.AsyncClient,
) -> None:
    result = await HangUpClient(downstream.app).get("/orders/o-2")

    assert 1.5 < json.loads(result.body)["stock"]["budget_left"] < 2.0  # of the route's 2 s


async def test_a_hang_up_stops_the_call(inventory_client: httpx.AsyncClient) -> None:
    result = await HangUpClient(downstream.app).get("/orders/o-4", hang_up_after_start=0.01)
    assert_cancelled(result, cause=CancelCause.CLIENT_DISCONNECTED)


# -- What cannot be stopped ----------------------------------------------------------------
ROUNDS = 200_000  # ~0.1 s of PBKDF2 here


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_c_code_in_a_thread_runs_on_after_the_hang_up() -> None:
    downstream_cpu.finished.clear()
    rounds = ROUNDS * 10  # ~1 s
    result = await HangUpClient(downstream_cpu.app).get(
        f"/key/thread?rounds={rounds}", hang_up_after_start=0.05
    )
    assert_cancelled(result)
    assert downstream_cpu.finished == []  # the endpoint has gone; the thread has not
    with anyio.fail_after(30):
        while not downstream_cpu.finished:
            await anyio.sleep(0.05)
    assert downstream_cpu.finished == [rounds]  # it burnt the CPU to the end, for nobody


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_c_code_in_a_process_is_killed_with_it() -> None:
    rounds = ROUNDS * 500  # ~50 s if it ran to its end
    started = time.monotonic()
    result = await HangUpClient(downstream_cpu.app, timeout=30).get(
        f"/key/process?rounds={rounds}", hang_up_after_start=0.3
    )
    assert_cancelled(result)
    assert time.monotonic() - started < 20  # the worker was killed, not waited for


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_key_examples_answer_when_the_client_stays() -> None:
    for path in ("/key/thread", "/key/process"):
        result = await HangUpClient(downstream_cpu.app, timeout=30).get(f"{path}?rounds=1000")
        assert result.status_code == 200, result.body
        assert len(json.loads(result.body)["key"]) == 64
