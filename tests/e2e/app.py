"""The app the real servers run: guarded and unguarded endpoints that record what happened.

Served as ``tests.e2e.app:app``. Every endpoint takes a request id (``?rid=``) and records
its events through :func:`record` (see ``_events.py``), which the test reads from its own
process. The ``fastapi_hangup`` logger writes to stderr with the :data:`LOG_TAG` prefix, so
its records land in the server's output and the test can count them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import traceback

import anyio
from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import PlainTextResponse

from fastapi_hangup import CancelCtx

from ._events import LOG_TAG, record


def _log_to_stderr() -> None:
    logger = logging.getLogger("fastapi_hangup")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{LOG_TAG} %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # exactly one line per record, whatever the server configures


_log_to_stderr()
app = FastAPI()


def _cancelled_exc_name() -> str:
    return _qualified(anyio.get_cancelled_exc_class())


def _qualified(cls: type[BaseException]) -> str:
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
    record(rid, "start")
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.stream():
        digest.update(chunk)
        size += len(chunk)
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None, size=size)
    return {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()}
