"""The app for the route-level real-server tests: ``@cancellable`` and ``CancellableRoute``.

Served as ``tests.e2e.route_app:app``. Like ``app.py``, every endpoint takes a request id
(``?rid=``) and records what it did through :func:`record`, which the test reads from its own
process. ``/plain/...`` lives on the app's own router (plain ``APIRoute``) and uses the
decorator; ``/route/...`` lives on an ``APIRouter(route_class=CancellableRoute)``.

Importing this module has no side effects beyond building the app, so the test may import its
constants: the large file is written at startup (lifespan), into ``$FASTAPI_HANGUP_E2E_FILES``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, StreamingResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.types import Message, Receive, Scope, Send

from fastapi_hangup import CancelCtx, CancellableRoute, CancelOnDisconnect, cancellable

from ._app_kit import cancelled_exc_name, finish_later, make_app, qualified, work
from ._events import FILES_ENV, record

try:
    from fastapi.sse import EventSourceResponse
except ImportError:  # FastAPI before SSE generator endpoints
    HAS_SSE = False
else:
    HAS_SSE = True

BIG_FILE_NAME = "big.bin"
BIG_FILE_SIZE = 50 * 1024 * 1024
#: The pause between two items of every streaming endpoint.
ITEM_INTERVAL = 0.02


def big_file_path() -> Path:
    """Where the large file is (under ``$FASTAPI_HANGUP_E2E_FILES``)."""
    return Path(os.environ[FILES_ENV]) / BIG_FILE_NAME


def big_file_content() -> bytes:
    """The large file's bytes: the same on every run, so the test can check them."""
    return random.Random(50).randbytes(BIG_FILE_SIZE)


def write_big_file(path: Path) -> None:
    """Write the large file unless a whole one is there already (one per test session)."""
    if path.exists() and path.stat().st_size == BIG_FILE_SIZE:
        return
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    partial.write_bytes(big_file_content())
    partial.replace(path)  # atomic: a reader never sees half a file


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    if FILES_ENV in os.environ:
        await anyio.to_thread.run_sync(write_big_file, big_file_path())
    yield


app = make_app(lifespan=_lifespan)
router = APIRouter(prefix="/route", route_class=CancellableRoute)


# -- @cancellable on a plain router ---------------------------------------------------------


@app.get("/plain/slow")
@cancellable
async def plain_slow(rid: str, seconds: float = 30.0) -> dict[str, str]:
    """No ``ctx`` parameter: the decorator alone guards the work."""
    await work(rid, seconds)
    return {"rid": rid}


@app.get("/plain/sync")
@cancellable
def plain_sync(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, Any]:
    """A sync endpoint in a worker thread: it stops by itself once it sees the hang-up."""
    record(rid, "start")
    steps = 0
    deadline = time.monotonic() + seconds
    while not ctx.is_cancelled and time.monotonic() < deadline:  # bounded by the deadline
        time.sleep(0.005)  # one step of blocking work
        steps += 1
    record(rid, "end", cancelled=ctx.is_cancelled, steps=steps)
    return {"rid": rid, "steps": steps}


# -- CancellableRoute -----------------------------------------------------------------------


@router.get("/slow")
async def route_slow(rid: str, ctx: CancelCtx, seconds: float = 30.0) -> dict[str, str]:
    """GET is a safe method: the route class cancels it by default."""
    await work(rid, seconds, ctx)
    return {"rid": rid}


@router.post("/write")
async def route_write(rid: str, seconds: float = 0.5) -> dict[str, str]:
    """POST writes: not cancelled unless opted in, so a hang-up lets it complete.

    No ``ctx`` parameter: declaring one opts the endpoint in through the dependency.
    """
    await work(rid, seconds)
    return {"rid": rid}


@router.post("/opted")
@cancellable
async def route_opted(rid: str, seconds: float = 30.0) -> dict[str, str]:
    """A POST opted in with ``@cancellable``."""
    await work(rid, seconds)
    return {"rid": rid}


async def slow_lookup(rid: str) -> str:
    """A dependency that takes long: only a route-level guard covers it."""
    record(rid, "dep-start", cancelled_exc=cancelled_exc_name())
    exc_name = None
    try:
        await anyio.sleep(30)
    except BaseException as exc:
        exc_name = qualified(type(exc))
        raise
    finally:
        record(rid, "dep-end", exc=exc_name)
    return "found"


@router.get("/dep")
async def route_dep(rid: str, found: str = Depends(slow_lookup)) -> dict[str, str]:
    record(rid, "endpoint")
    return {"rid": rid, "found": found}


class Item(BaseModel):
    """One item of the JSON Lines and SSE streams."""

    i: int


def _items(
    rid: str, ctx: CancelOnDisconnect, count: int, make: Callable[[int], Any]
) -> AsyncIterator[Any]:
    """Yield ``make(i)`` every :data:`ITEM_INTERVAL` s, recording each item and the end."""

    async def produce() -> AsyncIterator[Any]:
        produced = 0
        exc_name = None
        try:
            for i in range(count):
                record(rid, "item", i=i)
                yield make(i)
                produced += 1
                await anyio.sleep(ITEM_INTERVAL)
        except BaseException as exc:
            exc_name = qualified(type(exc))
            raise
        finally:
            record(rid, "stream-end", cancelled=ctx.is_cancelled, produced=produced, exc=exc_name)

    return produce()


@router.get("/stream")
async def route_stream(
    rid: str, ctx: CancelCtx, lines: int = 1000, background: bool = False
) -> StreamingResponse:
    """A line every 20 ms (20 s for the default 1000 lines), optionally a background task."""
    body = _items(rid, ctx, lines, lambda i: f"{rid} line {i:04d}\n")
    task = BackgroundTask(finish_later, rid) if background else None
    return StreamingResponse(body, media_type="text/plain", background=task)


@router.get("/jsonl")
async def route_jsonl(rid: str, ctx: CancelCtx, items: int = 1000) -> AsyncIterator[Item]:
    """FastAPI's JSON Lines generator endpoint."""
    async for item in _items(rid, ctx, items, lambda i: Item(i=i)):
        yield item


if HAS_SSE:

    @router.get("/sse", response_class=EventSourceResponse)
    async def route_sse(rid: str, ctx: CancelCtx, items: int = 1000) -> AsyncIterator[Item]:
        """FastAPI's server-sent events generator endpoint."""
        async for item in _items(rid, ctx, items, lambda i: Item(i=i)):
            yield item


@router.get("/sized")
async def route_sized(rid: str, ctx: CancelCtx, size: int = 1024 * 1024) -> StreamingResponse:
    """``size`` bytes with a Content-Length, then a short await before the stream ends.

    Like a proxy that passes on its upstream's Content-Length and closes the upstream after
    the last chunk: the client has the whole body before the final (empty) body message.
    A background task follows.
    """

    async def produce() -> AsyncIterator[bytes]:
        exc_name = None
        try:
            for start in range(0, size, 64 * 1024):
                yield bytes(min(64 * 1024, size - start))
            await anyio.sleep(0.2)  # closing the upstream
        except BaseException as exc:
            exc_name = qualified(type(exc))
            raise
        finally:
            record(rid, "stream-end", cancelled=ctx.is_cancelled, exc=exc_name)

    headers = {"Content-Length": str(size)}
    task = BackgroundTask(finish_later, rid)
    return StreamingResponse(
        produce(), media_type="application/octet-stream", headers=headers, background=task
    )


class RecordedFileResponse(FileResponse):
    """A ``FileResponse`` that records how many bytes it sent and how it ended.

    ``late_sends`` counts body sends made after the context was cancelled: how far the
    response ran on after the hang-up.
    """

    def __init__(
        self, path: Path, rid: str, ctx: CancelOnDisconnect, background: BackgroundTask | None
    ) -> None:
        super().__init__(path, media_type="application/octet-stream", background=background)
        self.rid = rid
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = late_sends = 0
        exc_name = None

        async def counting_send(message: Message) -> None:
            nonlocal sent, late_sends
            if message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
                if self.ctx.is_cancelled:
                    late_sends += 1
            await send(message)

        record(self.rid, "file-start")
        try:
            await super().__call__(scope, receive, counting_send)
        except BaseException as exc:
            exc_name = qualified(type(exc))
            raise
        finally:
            record(
                self.rid,
                "file-end",
                cancelled=self.ctx.is_cancelled,
                sent=sent,
                late_sends=late_sends,
                exc=exc_name,
            )


@router.get("/file")
async def route_file(rid: str, ctx: CancelCtx, background: bool = False) -> FileResponse:
    """The large file written at startup (``$FASTAPI_HANGUP_E2E_FILES``)."""
    task = BackgroundTask(finish_later, rid) if background else None
    return RecordedFileResponse(big_file_path(), rid, ctx, task)


app.include_router(router)
