"""The app the real servers run: guarded and unguarded endpoints that record what happened.

Served as ``tests.e2e.app:app``. Every endpoint takes a request id (``?rid=``) and records
its events through :func:`record` (see ``_events.py``), which the test reads from its own
process. The ``fastapi_hangup`` logger writes to stderr with the :data:`LOG_TAG` prefix and
the request id at the end (``[rid=...]``), so its records land in the server's output and a
test can count its own, even on a server that earlier tests used too.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator
from contextvars import ContextVar
from urllib.parse import parse_qs

import anyio
import sniffio
from fastapi import APIRouter, BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup import CancelCtx, CancellableRoute, CancelOnDisconnect

from ._events import LOG_TAG, record

_request_id: ContextVar[str] = ContextVar("request_id", default="-")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rid = _request_id.get()
        return True


def _log_to_stderr() -> None:
    logger = logging.getLogger("fastapi_hangup")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_WithRequestId())
    form = f"{LOG_TAG} %(levelname)s %(name)s: %(message)s [rid=%(rid)s]"
    handler.setFormatter(logging.Formatter(form))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # exactly one line per record, whatever the server configures


class _RequestIdMiddleware:
    """Puts the request's ``?rid=`` where log records of its task can find it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = parse_qs(scope["query_string"].decode("latin-1"))
            _request_id.set(query.get("rid", ["-"])[0])
        await self.app(scope, receive, send)


_log_to_stderr()
app = FastAPI()
app.add_middleware(_RequestIdMiddleware)


def _cancelled_exc_name() -> str:
    return _qualified(anyio.get_cancelled_exc_class())


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@app.exception_handler(Exception)
async def _print_unhandled(request: Request, exc: Exception) -> PlainTextResponse:
    # Starlette's last-resort handler: servers log the exception after it, but hypercorn
    # stays silent if a cancellation hits the task first. Print it, so no error goes unseen.
    print(f"{LOG_TAG} ERROR unhandled in {request.method} {request.url.path}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return PlainTextResponse("Internal Server Error", status_code=500)


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ready": True}


@app.get("/runtime")
async def runtime() -> dict[str, str | int]:
    """Which process and which event loop serve this request."""
    if sniffio.current_async_library() == "trio":
        loop = "trio"
    else:
        loop = _qualified(type(asyncio.get_running_loop()))
    return {"pid": os.getpid(), "loop": loop}


@app.get("/guarded/slow")
async def guarded_slow(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
    """Works for ``seconds`` unless the client hangs up first."""
    record(rid, "start", cancelled_exc=_cancelled_exc_name())
    try:
        await anyio.sleep(seconds)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=_qualified(type(exc)))
        raise
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid}


@app.get("/unguarded/slow")
async def unguarded_slow(rid: str, seconds: float = 30.0) -> dict[str, str]:
    """The same work without fastapi-hangup: nothing stops it when the client goes."""
    record(rid, "start", cancelled_exc=_cancelled_exc_name())
    try:
        await anyio.sleep(seconds)
    except BaseException as exc:
        record(rid, "end", exc=_qualified(type(exc)))
        raise
    record(rid, "end", exc=None)
    return {"rid": rid}


@app.get("/guarded/background")
async def guarded_background(
    rid: str, ctx: CancelCtx, background: BackgroundTasks
) -> dict[str, str]:
    """Answers after a short await; a background task then works for 0.2 s."""
    record(rid, "start")
    await anyio.sleep(0.05)  # long enough for the hang-up watcher to be armed
    background.add_task(_finish_later, rid)
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid}


async def _finish_later(rid: str) -> None:
    try:
        await anyio.sleep(0.2)
    except BaseException as exc:
        record(rid, "background-stopped", exc=_qualified(type(exc)))
        raise
    record(rid, "background-done")


@app.get("/guarded/quick")
async def guarded_quick(rid: str, ctx: CancelCtx) -> dict[str, str | bool]:
    """Answers after one short await."""
    await anyio.sleep(0.01)
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid, "cancelled": ctx.is_cancelled}


@app.post("/guarded/upload")
async def guarded_upload(rid: str, ctx: CancelCtx, request: Request) -> dict[str, str | int]:
    """Streams the request body and answers with its length and SHA-256."""
    record(rid, "start", cancelled_exc=_cancelled_exc_name())
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=_qualified(type(exc)), size=size)
        raise
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None, size=size)
    return {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()}


async def _ticks(
    rid: str, ctx: CancelOnDisconnect, count: int, interval: float
) -> AsyncIterator[bytes]:
    """``count`` lines, one every ``interval`` seconds; records how the stream ended."""
    sent = 0
    record(rid, "start", cancelled_exc=_cancelled_exc_name())
    try:
        for sent in range(count):
            yield b"tick %d\n" % sent
            await anyio.sleep(interval)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=_qualified(type(exc)), sent=sent)
        raise
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None, sent=count)


@app.get("/guarded/stream")
async def guarded_stream(
    rid: str, ctx: CancelCtx, count: int = 200, interval: float = 0.05
) -> StreamingResponse:
    """A plain route: the dependency's work ends when the endpoint returns the response.

    The body is then streamed by Starlette, which races it against its own listener on the
    raw ``receive``: that listener, not fastapi-hangup, stops the stream after a hang-up.
    """
    return StreamingResponse(_ticks(rid, ctx, count, interval), media_type="text/plain")


streaming = APIRouter(route_class=CancellableRoute)


@streaming.get("/route/stream")
async def route_stream(
    rid: str, ctx: CancelCtx, count: int = 200, interval: float = 0.05
) -> StreamingResponse:
    """A cancellable route: its context covers the streamed body as well."""
    return StreamingResponse(_ticks(rid, ctx, count, interval), media_type="text/plain")


app.include_router(streaming)
