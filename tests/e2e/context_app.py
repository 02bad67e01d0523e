"""The app for the context's real-server tests: deadlines, and work offloaded to a process.

Served as ``tests.e2e.context_app:app``. Like ``app.py``, every endpoint takes a request id
(``?rid=``) and records what it did through :func:`record`; the ``fastapi_hangup`` logger
writes to stderr with the :data:`LOG_TAG` prefix and the request id at the end
(``[rid=...]``), so a test finds its own records in the server's output.

Every deadline here is :data:`BUDGET`: through the dependency, the decorator and the route
class, and on a streaming body (route class only: it alone covers the body).
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Annotated
from urllib.parse import parse_qs

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup import (
    CancelCtx,
    CancelOnDisconnect,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)
from tests._offload import spin, square

from ._events import LOG_TAG, record

#: The time budget of every ``/deadline/...`` endpoint, in seconds.
BUDGET = 0.2
#: Lines of ``/deadline/stream`` and the pause before each: 1 s in all, five times the budget.
STREAM_LINES = 20
STREAM_INTERVAL = 0.05

_request_id: ContextVar[str] = ContextVar("request_id", default="-")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rid = _request_id.get()
        return True


def _log_to_stderr() -> None:
    logger = logging.getLogger("fastapi_hangup")
    if any(isinstance(f, _WithRequestId) for h in logger.handlers for f in h.filters):
        return  # installed already
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_WithRequestId())
    form = f"{LOG_TAG} %(levelname)s %(name)s: %(message)s [rid=%(rid)s]"
    handler.setFormatter(logging.Formatter(form))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # exactly one line per record, whatever the server configures


class _RequestIdMiddleware:
    """Puts the request's ``?rid=`` where log records of its task can find it.

    It also installs the log handler, on the first request: not on import, which would
    change the logging of the test process that imports this module for its constants, and
    not in a lifespan, which daphne does not run.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            _log_to_stderr()
            query = parse_qs(scope["query_string"].decode("latin-1"))
            _request_id.set(query.get("rid", ["-"])[0])
        await self.app(scope, receive, send)


app = FastAPI()
app.add_middleware(_RequestIdMiddleware)
router = APIRouter(route_class=cancellable_route(deadline=BUDGET))

BudgetCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=BUDGET))]


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@app.exception_handler(Exception)
async def _print_unhandled(request: Request, exc: Exception) -> PlainTextResponse:
    # Print any unhandled error with a marker the test looks for, whatever the server logs.
    print(f"{LOG_TAG} ERROR unhandled in {request.method} {request.url.path}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return PlainTextResponse("Internal Server Error", status_code=500)


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


async def _work_for_ever(rid: str) -> dict[str, str]:
    """Record the start, then work 30 s (far past the budget) and record how it ended."""
    record(rid, "start", cancelled_exc=_qualified(anyio.get_cancelled_exc_class()))
    try:
        await anyio.sleep(30)
    except BaseException as exc:
        record(rid, "end", exc=_qualified(type(exc)))
        raise
    record(rid, "end", exc=None)
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
            record(rid, "end", exc=_qualified(type(exc)))
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
        record(rid, "end", exc=_qualified(type(exc)), cancelled=ctx.is_cancelled)
        raise
    record(rid, "end", exc=None, cancelled=ctx.is_cancelled)
    return {"turns": turns}


@app.get("/offload/square")
async def offload_square(rid: str, n: int, ctx: CancelCtx) -> dict[str, int]:
    return {"square": await ctx.run_in_process(square, n)}


app.include_router(router)
