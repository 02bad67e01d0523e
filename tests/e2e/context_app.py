"""The app for the context's real-server tests: deadlines, and work offloaded to a process.

Served as ``tests.e2e.context_app:app``. Like ``app.py``, every endpoint takes a request id
(``?rid=``) and records what it did through :func:`record`; the ``fastapi_hangup`` logger
writes to stderr with the :data:`LOG_TAG` prefix and the request id at the end
(``[rid=...]``), so a test finds its own records in the server's output.

Every deadline here is :data:`BUDGET`: through the dependency, the decorator and the route
class, and on a streaming body (route class only: it alone covers the body).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse

from fastapi_hangup import (
    CancelCtx,
    CancelOnDisconnect,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)
from tests._offload import spin, square, worker_state

from ._app_kit import make_app, qualified, work
from ._events import record

#: The time budget of every ``/deadline/...`` endpoint, in seconds.
BUDGET = 0.2
#: Lines of ``/deadline/stream`` and the pause before each: 1 s in all, five times the budget.
STREAM_LINES = 20
STREAM_INTERVAL = 0.05

app = make_app()
router = APIRouter(route_class=cancellable_route(deadline=BUDGET))

BudgetCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=BUDGET))]


async def _work_for_ever(rid: str) -> dict[str, str]:
    """Work 30 s, far past the budget, recording how it started and ended."""
    await work(rid, 30)
    return {"rid": rid}


@app.get("/deadline/dependency")
async def deadline_dependency(rid: str, ctx: BudgetCtx) -> dict[str, str]:
    return await _work_for_ever(rid)


@app.get("/deadline/decorator")
@cancellable(deadline=BUDGET)
async def deadline_decorator(rid: str) -> dict[str, str]:
    return await _work_for_ever(rid)


@router.get("/deadline/route")
async def deadline_route(rid: str) -> dict[str, str]:
    return await _work_for_ever(rid)


@router.get("/deadline/stream")
async def deadline_stream(rid: str) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        record(rid, "start")
        try:
            for number in range(STREAM_LINES):
                await anyio.sleep(STREAM_INTERVAL)
                yield f"line {number}\n"
        except BaseException as exc:
            record(rid, "end", exc=qualified(type(exc)))
            raise
        record(rid, "end", exc=None)

    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/offload/spin")
async def offload_spin(rid: str, pid_file: str, ctx: CancelCtx) -> dict[str, int]:
    """Burn a CPU for 30 s in a worker process (which writes its pid to ``pid_file``)."""
    record(rid, "start")
    try:
        turns = await ctx.run_in_process(spin, 30.0, pid_file)
    except BaseException as exc:
        # The worker's fate the moment run_in_process gives up: it must be dead by now.
        worker = worker_state(pid_file)
        record(rid, "end", exc=qualified(type(exc)), cancelled=ctx.is_cancelled, worker=worker)
        raise
    record(rid, "end", exc=None, cancelled=ctx.is_cancelled)
    return {"turns": turns}


@app.get("/offload/square")
async def offload_square(rid: str, n: int, ctx: CancelCtx) -> dict[str, int]:
    return {"square": await ctx.run_in_process(square, n)}


app.include_router(router)
