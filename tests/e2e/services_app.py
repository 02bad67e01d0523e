"""The app for the services tests: PostgreSQL, Redis and an upstream, used as apps use them.

Served as ``tests.e2e.services_app:app`` (asyncio) with ``add_cancellation(app)``; no endpoint
mentions fastapi-hangup except the shielded write. The lifespan opens what a real app opens:
an asyncpg pool, a SQLAlchemy async engine, a psycopg 3 async pool, a Redis client, and
httpx and aiohttp clients for a slow upstream. ``GET /stats`` says what went wrong since the
server started: warning and error log records of every library, unraisable exceptions and
loop errors ("Task exception was never retrieved"), and how many connections each client
has opened (a connection destroyed by a cancellation is reopened, and counted).

The server gets ``HANGUP_E2E_PG`` (a DSN), ``HANGUP_E2E_REDIS`` (a URL) and
``HANGUP_E2E_UPSTREAM`` (the upstream's port) in its environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import anyio
import asyncpg
import httpx
import psycopg_pool
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_hangup import CancelCtx, add_cancellation

from ._app_kit import make_app
from ._events import record

PG = os.environ.get("HANGUP_E2E_PG", "")
REDIS = os.environ.get("HANGUP_E2E_REDIS", "")
UPSTREAM = os.environ.get("HANGUP_E2E_UPSTREAM", "0")

#: What went wrong, as ``"source: message"`` lines.
problems: list[str] = []
#: Connections each client opened since the start.
opened: dict[str, int] = {"asyncpg": 0, "sqlalchemy": 0, "psycopg": 0}
#: Connections SQLAlchemy invalidated on purpose: it treats a cancellation during a query as
#: a possible disconnect (``is_exit_exception``) and replaces that connection, whatever the
#: way of cancelling.
invalidated = {"sqlalchemy": 0}


class _Problems(logging.Handler):
    def emit(self, entry: logging.LogRecord) -> None:
        if not entry.name.startswith(("fastapi_hangup", "uvicorn.access")):
            problems.append(f"log {entry.name} {entry.levelname}: {entry.getMessage()}")


def _watch_for_problems() -> None:
    logging.captureWarnings(True)  # warnings become records of the py.warnings logger
    warnings.simplefilter("always")
    handler = _Problems(level=logging.WARNING)
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.WARNING)

    def unraisable(info: Any) -> None:
        problems.append(f"unraisable: {info.exc_value!r} in {info.object!r}")

    sys.unraisablehook = unraisable
    loop = asyncio.get_running_loop()

    def loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        problems.append(f"loop: {context.get('message')} {context.get('exception')!r}")

    loop.set_exception_handler(loop_error)


state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    _watch_for_problems()

    async def on_connect(connection: asyncpg.Connection) -> None:
        opened["asyncpg"] += 1

    async with asyncpg.create_pool(PG, min_size=2, max_size=8, init=on_connect) as pool:
        await pool.execute(
            "CREATE TABLE IF NOT EXISTS writes (rid text NOT NULL, kind text NOT NULL)"
        )
        engine = create_async_engine(
            PG.replace("postgresql://", "postgresql+asyncpg://"), pool_size=4, max_overflow=4
        )

        @event.listens_for(engine.sync_engine, "connect")
        def sqlalchemy_connect(*_: object) -> None:
            opened["sqlalchemy"] += 1

        @event.listens_for(engine.sync_engine, "invalidate")
        def sqlalchemy_invalidate(*_: object) -> None:
            invalidated["sqlalchemy"] += 1

        def psycopg_configure(connection: object) -> None:
            opened["psycopg"] += 1

        psycopg = psycopg_pool.AsyncConnectionPool(
            PG, min_size=2, max_size=8, open=False, configure=_async(psycopg_configure)
        )
        await psycopg.open(wait=True)
        cache = aioredis.from_url(REDIS)
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{UPSTREAM}") as client,
            aiohttp.ClientSession(f"http://127.0.0.1:{UPSTREAM}") as session,
        ):
            state.update(
                pool=pool,
                engine=engine,
                sessions=async_sessionmaker(engine),
                psycopg=psycopg,
                redis=cache,
                httpx=client,
                aiohttp=session,
            )
            try:
                yield
            finally:
                await cache.aclose()
                await psycopg.close()
                await engine.dispose()


def _async(func: Any) -> Any:
    async def call(*args: Any) -> None:
        func(*args)

    return call


app = make_app(lifespan=lifespan)
add_cancellation(app)


@app.get("/finally-write")
async def finally_write(rid: str) -> dict[str, bool]:
    """The work awaits; whatever ends it, the ``finally`` block writes a row."""
    try:
        record(rid, "start")
        await anyio.sleep(30)
    finally:
        async with state["pool"].acquire() as connection:
            await connection.execute("INSERT INTO writes VALUES ($1, 'finally')", rid)
        record(rid, "end")
    return {"ok": True}


@app.get("/asyncpg")
async def asyncpg_transaction(rid: str) -> dict[str, bool]:
    async with state["pool"].acquire() as connection, connection.transaction():
        await connection.execute("INSERT INTO writes VALUES ($1, 'abandoned')", rid)
        record(rid, "start")
        try:
            await connection.execute("SELECT pg_sleep(30) /* asyncpg */")
        finally:
            record(rid, "end")
    return {"ok": True}


@app.get("/sqlalchemy")
async def sqlalchemy_session(rid: str) -> dict[str, bool]:
    async with state["sessions"]() as session, session.begin():
        await session.execute(text("INSERT INTO writes VALUES (:rid, 'abandoned')"), {"rid": rid})
        record(rid, "start")
        try:
            await session.execute(text("SELECT pg_sleep(30) /* sqlalchemy */"))
        finally:
            record(rid, "end")
    return {"ok": True}


@app.get("/psycopg")
async def psycopg_transaction(rid: str) -> dict[str, bool]:
    async with state["psycopg"].connection() as connection, connection.transaction():
        await connection.execute("INSERT INTO writes VALUES (%s, 'abandoned')", (rid,))
        record(rid, "start")
        try:
            await connection.execute("SELECT pg_sleep(30) /* psycopg */")
        finally:
            record(rid, "end")
    return {"ok": True}


@app.get("/shielded-write")
async def shielded_write(rid: str, ctx: CancelCtx) -> dict[str, bool]:
    """The commit must land once; the hang-up comes while it is under way."""
    with ctx.shield():
        async with state["pool"].acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO writes VALUES ($1, 'shielded')", rid)
            record(rid, "start")
            await connection.execute("SELECT pg_sleep(0.2)")
    try:
        await anyio.sleep(30)
    finally:
        record(rid, "end")
    return {"ok": True}


@app.get("/redis-lock")
async def redis_lock(rid: str) -> dict[str, bool]:
    """The work holds a lock; its release (an await in ``__aexit__``) must happen."""
    async with state["redis"].lock(f"lock:{rid}", timeout=60):
        record(rid, "start")
        try:
            await anyio.sleep(30)
        finally:
            record(rid, "end")
    return {"ok": True}


@app.get("/redis-pop")
async def redis_pop(rid: str) -> dict[str, bool]:
    """A blocking pop is cancelled while Redis still owes its reply."""
    async with state["redis"].lock(f"lock:{rid}", timeout=60):
        record(rid, "start")
        try:
            await state["redis"].blpop([f"queue:{rid}"], timeout=30)
        finally:
            record(rid, "end")
    return {"ok": True}


@app.get("/httpx")
async def httpx_stream(rid: str) -> dict[str, int]:
    size = 0
    async with state["httpx"].stream("GET", "/stream", params={"rid": rid}) as response:
        record(rid, "start")
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
        finally:
            record(rid, "end")
    return {"size": size}


@app.get("/aiohttp")
async def aiohttp_stream(rid: str) -> dict[str, int]:
    size = 0
    async with state["aiohttp"].get("/stream", params={"rid": rid}) as response:
        record(rid, "start")
        try:
            async for chunk in response.content.iter_any():
                size += len(chunk)
        finally:
            record(rid, "end")
    return {"size": size}


@app.get("/stats")
async def stats() -> dict[str, Any]:
    redis_info = await state["redis"].info("stats")
    return {
        "problems": problems,
        "opened": {
            **opened,
            "redis": redis_info["total_connections_received"],
        },
        "invalidated": invalidated,
        "checked_out": {
            "asyncpg": state["pool"].get_size() - state["pool"].get_idle_size(),
            "sqlalchemy": state["engine"].pool.checkedout(),
            "psycopg": state["psycopg"].get_stats().get("pool_size", 0)
            - state["psycopg"].get_stats().get("pool_available", 0),
        },
        "psycopg": state["psycopg"].get_stats(),
        "httpx_connections": len(state["httpx"]._transport._pool.connections),
    }
