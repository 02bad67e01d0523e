"""Cleanup after a hang-up on either backend: awaited ``finally`` writes and an httpx stream.

Served as ``tests.e2e.cleanup_app:app`` by an asyncio server and by hypercorn's trio worker;
nothing here names a backend. ``HANGUP_E2E_UPSTREAM`` is the port of the slow upstream
(``tests.e2e.upstream_app``). Every endpoint records ``start``, and ``end`` as its last act.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, add_cancellation

from ._app_kit import make_app, qualified
from ._events import record

clients: dict[str, httpx.AsyncClient] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    upstream = f"http://127.0.0.1:{os.environ.get('HANGUP_E2E_UPSTREAM', '0')}"
    async with httpx.AsyncClient(base_url=upstream) as client:
        clients["upstream"] = client
        yield


app = make_app(lifespan=lifespan)
add_cancellation(app)


async def write(rid: str, kind: str) -> None:
    await anyio.sleep(0.01)  # the round trip of a real write
    record(rid, "written", kind=kind)


@app.get("/finally-write")
async def finally_write(rid: str) -> dict[str, bool]:
    """An await in ``finally``, unshielded: it runs on asyncio, it is cancelled on trio."""
    record(rid, "start")
    try:
        await anyio.sleep(30)
    finally:
        try:
            await write(rid, "plain")
        except BaseException as exc:
            record(rid, "end", exc=qualified(type(exc)))
            raise
        record(rid, "end", exc=None)
    return {"ok": True}


@app.get("/shielded-finally-write")
async def shielded_finally_write(rid: str, ctx: CancelCtx) -> dict[str, bool]:
    """The portable form: the write is shielded, so it lands on both backends."""
    record(rid, "start")
    try:
        await anyio.sleep(30)
    finally:
        with ctx.shield():
            await write(rid, "shielded")
        record(rid, "end", exc=None)
    return {"ok": True}


@app.get("/httpx")
async def httpx_stream(rid: str) -> dict[str, Any]:
    size = 0
    try:
        async with clients["upstream"].stream("GET", "/stream", params={"rid": rid}) as response:
            record(rid, "start")
            async for chunk in response.aiter_raw():
                size += len(chunk)
    finally:
        record(rid, "end", exc=None)
    return {"size": size}
