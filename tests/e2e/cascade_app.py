"""One service of the cascade: nginx → A → B → C, each this app in a uvicorn of its own.

Served as ``tests.e2e.cascade_app:app``. The environment says which service it is:

- ``CASCADE_NAME``: ``A``, ``B`` or ``C`` (recorded with each event);
- ``CASCADE_NEXT``: the next service's base URL, or empty for the last one;
- ``CASCADE_GUARDED``: ``1`` (the default) for ``add_cancellation(app, deadline_header=True)``,
  ``0`` for the same chain without fastapi-hangup (the benchmark's reference);
- ``CASCADE_BUDGET``: the budget of ``GET /chain/budget``, in seconds (A's entry).

``GET /chain?rid=...&seconds=...`` does ``seconds`` of work in ticks of 10 ms (a little CPU,
then a sleep) while it calls the next service's ``/chain`` with the same ``rid``, through an
``httpx.AsyncClient`` with the [`forward_deadline`][fastapi_hangup.forward_deadline] hook;
it answers once both are done. Each service records ``start`` (with the budget it was given)
and ``end`` (with the time of every tick, how the work ended, and the status the next service
answered), and the guarded ones ``stopped`` from the ``on_stop`` hook.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from fastapi_hangup import StoppedRequest, add_cancellation, cancellable, forward_deadline

from ._events import record

NAME = os.environ.get("CASCADE_NAME", "?")
NEXT = os.environ.get("CASCADE_NEXT", "")
GUARDED = os.environ.get("CASCADE_GUARDED", "1") == "1"
BUDGET = float(os.environ.get("CASCADE_BUDGET", "0.5"))
TICK = 0.01  # seconds per unit of work
clients: dict[str, httpx.AsyncClient] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with httpx.AsyncClient(
        base_url=NEXT or "http://-", event_hooks={"request": [forward_deadline]}
    ) as client:
        clients["next"] = client
        yield


def on_stop(stopped: StoppedRequest) -> None:
    # The request's rid travels in x-request-id too, which StoppedRequest carries.
    rid = stopped.request_id or "-"
    record(rid, "stopped", service=NAME, cause=stopped.cause.value, status=stopped.status_code)


app = FastAPI(lifespan=lifespan)
if GUARDED:
    # The whole of what a service in the chain writes: every GET is cancelled on hang-up,
    # and the caller's deadline header sets its budget.
    add_cancellation(app, deadline_header=True, on_stop=on_stop)


@app.get("/ready")
async def ready() -> str:
    return "ok"


def _unit_of_work() -> None:
    digest = b""
    for _ in range(200):  # ~0.2 ms of CPU
        digest = hashlib.sha256(digest).digest()


async def _work(ticks: list[float], seconds: float) -> None:
    for _ in range(round(seconds / TICK)):
        _unit_of_work()
        ticks.append(time.monotonic())
        await anyio.sleep(TICK)


async def _call_next(rid: str, seconds: float, statuses: list[int]) -> None:
    params: dict[str, str | float] = {"rid": rid, "seconds": seconds}
    headers = {"x-request-id": rid}
    response = await clients["next"].get("/chain", params=params, headers=headers, timeout=60)
    statuses.append(response.status_code)


async def _chain(rid: str, seconds: float) -> dict[str, Any]:
    effective = anyio.current_effective_deadline() - anyio.current_time()
    record(rid, "start", service=NAME, budget=None if effective == float("inf") else effective)
    ticks: list[float] = []
    statuses: list[int] = []
    ended = "returned"
    try:
        # The endpoint's task only waits for its two children here. (On asyncio, a deadline
        # that passes while this task sits in a shield of httpx's, with a child still
        # running, cancels the child but not this task: it would answer 200.)
        async with anyio.create_task_group() as group:
            group.start_soon(_work, ticks, seconds)
            if NEXT:
                group.start_soon(_call_next, rid, seconds, statuses)
        return {"service": NAME, "ticks": len(ticks), "downstream": statuses}
    except BaseException as exc:
        ended = type(exc).__name__
        raise
    finally:
        record(rid, "end", service=NAME, ticks=ticks, ended=ended, downstream=statuses)


@app.get("/chain")
async def chain(rid: str, seconds: float = 30.0) -> dict[str, Any]:
    return await _chain(rid, seconds)


@app.get("/chain/budget")
@cancellable(deadline=BUDGET, deadline_header=True)  # A's own budget for the whole chain
async def chain_with_budget(rid: str, seconds: float = 30.0) -> dict[str, Any]:
    return await _chain(rid, seconds)
