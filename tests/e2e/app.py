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
import os
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
import sniffio
from fastapi import APIRouter, BackgroundTasks, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from fastapi_hangup import CancelCtx, CancellableRoute, CancelOnDisconnect

from ._app_kit import cancelled_exc_name, finish_later, make_app, qualified, work
from ._events import record

app = make_app()


@app.get("/runtime")
async def runtime() -> dict[str, str | int]:
    """Which process and which event loop serve this request."""
    if sniffio.current_async_library() == "trio":
        loop = "trio"
    else:
        loop = qualified(type(asyncio.get_running_loop()))
    return {"pid": os.getpid(), "loop": loop}


@app.get("/guarded/slow")
async def guarded_slow(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
    """Works for ``seconds`` unless the client hangs up first."""
    await work(rid, seconds, ctx)
    return {"rid": rid}


@app.get("/unguarded/slow")
async def unguarded_slow(rid: str, seconds: float = 30.0) -> dict[str, str]:
    """The same work without fastapi-hangup: nothing stops it when the client goes."""
    await work(rid, seconds)
    return {"rid": rid}


@app.get("/guarded/background")
async def guarded_background(
    rid: str, ctx: CancelCtx, background: BackgroundTasks
) -> dict[str, str]:
    """Answers after a short await; a background task then works for 0.2 s."""
    record(rid, "start")
    await anyio.sleep(0.05)  # long enough for the hang-up watcher to be armed
    background.add_task(finish_later, rid)
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid}


@app.get("/guarded/quick")
async def guarded_quick(rid: str, ctx: CancelCtx) -> dict[str, str | bool]:
    """Answers after one short await."""
    await anyio.sleep(0.01)
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid, "cancelled": ctx.is_cancelled}


@app.get("/guarded/shielded")
async def guarded_shielded(rid: str, ctx: CancelCtx) -> None:
    """A 0.3 s shielded write, then more work: the write must finish despite a hang-up."""
    record(rid, "start", cancelled_exc=cancelled_exc_name())
    try:
        with ctx.shield():
            await anyio.sleep(0.3)
            record(rid, "written", cancelled=ctx.is_cancelled)
        await anyio.sleep(30)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=qualified(type(exc)))
        raise


@app.get("/guarded/items/{item_id}")
async def guarded_item(item_id: int, ctx: CancelCtx) -> dict[str, int]:
    """Answers like its unguarded twin: 404 with a header via HTTPException, 422, 200."""
    if item_id == 0:
        raise HTTPException(404, "no such item", headers={"x-reason": "zero"})
    return {"item_id": item_id}


@app.get("/unguarded/items/{item_id}")
async def unguarded_item(item_id: int) -> dict[str, int]:
    if item_id == 0:
        raise HTTPException(404, "no such item", headers={"x-reason": "zero"})
    return {"item_id": item_id}


@app.post("/guarded/upload")
async def guarded_upload(rid: str, ctx: CancelCtx, request: Request) -> dict[str, str | int]:
    """Streams the request body and answers with its length and SHA-256."""
    record(rid, "start", cancelled_exc=cancelled_exc_name())
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=qualified(type(exc)), size=size)
        raise
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None, size=size)
    return {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()}


async def _ticks(
    rid: str, ctx: CancelOnDisconnect, count: int, interval: float
) -> AsyncIterator[bytes]:
    """``count`` lines, one every ``interval`` seconds; records how the stream ended."""
    sent = 0
    record(rid, "start", cancelled_exc=cancelled_exc_name())
    try:
        for sent in range(count):
            yield b"tick %d\n" % sent
            await anyio.sleep(interval)
    except BaseException as exc:
        record(rid, "end", cancelled=ctx.is_cancelled, exc=qualified(type(exc)), sent=sent)
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


@app.post("/guarded/expect")
async def guarded_expect(rid: str, ctx: CancelCtx) -> dict[str, str | bool]:
    """Never reads its body: 0.3 s of work, then 200 (for ``Expect: 100-continue``)."""
    record(rid, "start")
    await anyio.sleep(0.3)  # the hang-up watcher would be armed here
    record(rid, "end", cancelled=ctx.is_cancelled, exc=None)
    return {"rid": rid, "cancelled": ctx.is_cancelled}


@app.post("/unguarded/expect")
async def unguarded_expect(rid: str) -> dict[str, str | bool]:
    """The same without fastapi-hangup: what the server does on its own."""
    record(rid, "start")
    await anyio.sleep(0.3)
    record(rid, "end", cancelled=None, exc=None)
    return {"rid": rid, "cancelled": False}


async def _task_group_held(rid: str) -> AsyncIterator[None]:
    """Keeps a task group (a cancel scope of its own) open across its ``yield``."""
    try:
        async with anyio.create_task_group():
            yield
    except BaseException as exc:
        record(rid, "held-exit", exc=qualified(type(exc)))
        raise
    record(rid, "held-exit", exc=None)


async def _cancel_scope_held(rid: str) -> AsyncIterator[None]:
    """Keeps a bare cancel scope open across its ``yield``."""
    try:
        with anyio.CancelScope():
            yield
    except BaseException as exc:
        record(rid, "held-exit", exc=qualified(type(exc)))
        raise
    record(rid, "held-exit", exc=None)


@app.get(
    "/nested/function-cancel-scope",
    dependencies=[Depends(_cancel_scope_held, scope="function")],
)
async def nested_function_cancel_scope(
    rid: str, ctx: CancelCtx, seconds: float = 30.0
) -> dict[str, str]:
    """The same as ``/nested/function`` with a cancel scope instead of a task group."""
    await work(rid, seconds, ctx)
    return {"rid": rid}


@app.get("/nested/function", dependencies=[Depends(_task_group_held, scope="function")])
async def nested_function(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
    """A function-scoped yield dependency solved before ``ctx`` holds a task group open."""
    await work(rid, seconds, ctx)
    return {"rid": rid}


@app.get("/nested/request")
async def nested_request(
    rid: str,
    ctx: CancelCtx,
    held: Annotated[None, Depends(_task_group_held)],
    seconds: float = 30.0,
) -> dict[str, str]:
    """A request-scoped one solved after ``ctx`` does: the scope ends with the request."""
    await work(rid, seconds, ctx)
    return {"rid": rid}


streaming = APIRouter(route_class=CancellableRoute)


@streaming.get("/route/stream")
async def route_stream(
    rid: str, ctx: CancelCtx, count: int = 200, interval: float = 0.05
) -> StreamingResponse:
    """A cancellable route: its context covers the streamed body as well."""
    return StreamingResponse(_ticks(rid, ctx, count, interval), media_type="text/plain")


app.include_router(streaming)
