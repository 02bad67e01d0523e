"""Databases, caches and HTTP clients after a hang-up: one recipe per library.

Serve it with ``DATABASE_URL`` (a ``postgresql://`` DSN), ``REDIS_URL`` and ``UPSTREAM_URL``
(any HTTP service with a slow ``GET /stream``) in the environment. The services tests run
every route here against a real PostgreSQL, Redis and upstream (tests/e2e/test_recipes_e2e.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import psycopg_pool
import redis.asyncio as aioredis
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from fastapi_hangup import DEFAULT_DEADLINE_HEADER, CancelCtx, add_cancellation, cancellable

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://localhost/app")
REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379")
UPSTREAM_URL = os.environ.get("UPSTREAM_URL", "http://localhost:8001")
clients: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    engine = create_async_engine(DATABASE_URL.replace("postgresql://", "postgresql+asyncpg://"))
    psycopg = psycopg_pool.AsyncConnectionPool(DATABASE_URL, open=False)
    await psycopg.open()
    async with (
        asyncpg.create_pool(DATABASE_URL) as pool,
        httpx.AsyncClient(base_url=UPSTREAM_URL) as upstream,
    ):
        await pool.execute("CREATE TABLE IF NOT EXISTS orders (id text PRIMARY KEY)")
        clients.update(
            pool=pool,
            sessions=async_sessionmaker(engine),
            psycopg=psycopg,
            redis=aioredis.from_url(REDIS_URL, decode_responses=True),
            upstream=upstream,
        )
        yield
        await clients["redis"].aclose()
        await psycopg.close()
        await engine.dispose()


app = FastAPI(lifespan=lifespan)
add_cancellation(app)  # every GET; the POST below opts in with @cancellable


# --8<-- [start:asyncpg]
@app.get("/report/asyncpg")
async def report_asyncpg(seconds: float = 0) -> dict[str, int]:
    pool: asyncpg.Pool = clients["pool"]
    async with pool.acquire() as connection, connection.transaction():
        # A hang-up here: asyncpg cancels the query on the server, the transaction rolls
        # back, the connection goes back to the pool, ready for the next request.
        rows = await connection.fetchval("SELECT count(*) FROM pg_sleep($1)", seconds)
    return {"rows": rows}


# --8<-- [end:asyncpg]


# --8<-- [start:sqlalchemy]
@app.get("/report/sqlalchemy")
async def report_sqlalchemy(seconds: float = 0) -> dict[str, int]:
    async with clients["sessions"]() as session, session.begin():
        # A hang-up here: the query is cancelled, the session rolls back and closes.
        # SQLAlchemy then replaces that pooled connection, as it does for any cancellation.
        result = await session.execute(
            text("SELECT count(*) FROM pg_sleep(:seconds)"), {"seconds": seconds}
        )
    return {"rows": result.scalar_one()}


# --8<-- [end:sqlalchemy]


# --8<-- [start:psycopg]
@app.get("/report/psycopg")
async def report_psycopg(seconds: float = 0) -> dict[str, int]:
    async with clients["psycopg"].connection() as connection, connection.transaction():
        # A hang-up here: psycopg cancels the query on the server and rolls back; the pool
        # keeps the connection.
        cursor = await connection.execute("SELECT count(*) FROM pg_sleep(%s)", (seconds,))
        row = await cursor.fetchone()
    return {"rows": row[0] if row else 0}


# --8<-- [end:psycopg]


# --8<-- [start:deadline]
@app.get("/report/budget")
@cancellable(deadline=1.0)  # or a budget from the caller: deadline_header=True
async def report_within_budget(ctx: CancelCtx, seconds: float = 0) -> dict[str, int]:
    pool: asyncpg.Pool = clients["pool"]
    async with pool.acquire() as connection, connection.transaction():
        # The budget's end cancels the query from here (a 504). As a backstop, PostgreSQL
        # stops it itself just after, even if this process cannot reach it any more.
        milliseconds = int(ctx.remaining() * 1000) + 500
        await connection.execute(f"SET LOCAL statement_timeout = {milliseconds}")
        rows = await connection.fetchval("SELECT count(*) FROM pg_sleep($1)", seconds)
    return {"rows": rows}


# --8<-- [end:deadline]


# --8<-- [start:commit]
@app.post("/orders/{order_id}")
@cancellable  # a POST: add_cancellation covers the safe methods only, by default
async def place_order(order_id: str, ctx: CancelCtx) -> dict[str, str]:
    with ctx.shield():  # the order is placed once, hang-up or not
        async with clients["pool"].acquire() as connection, connection.transaction():
            await connection.execute("INSERT INTO orders VALUES ($1)", order_id)
    await clients["redis"].publish("orders", order_id)  # a hang-up stops what follows
    return {"placed": order_id}


# --8<-- [end:commit]


# --8<-- [start:redis]
@app.get("/jobs/next")
async def next_job(ctx: CancelCtx, worker: str) -> dict[str, str | None]:
    cache: aioredis.Redis = clients["redis"]
    async with cache.lock(f"worker:{worker}", timeout=60):  # released after a hang-up too
        # Block at most as long as the budget allows (30 s without one). After a hang-up
        # redis-py drops this one connection (Redis still owes it the reply); the lock's
        # release uses another, and the client reconnects on its own.
        popped = await cache.blpop(["jobs"], timeout=min(ctx.remaining(), 30.0))
    return {"job": str(popped[1]) if popped else None}


# --8<-- [end:redis]


# --8<-- [start:httpx]
@app.get("/proxy")
async def proxy(ctx: CancelCtx) -> dict[str, int]:
    size = 0
    headers = {}
    if ctx.remaining() != float("inf"):  # tell the upstream what is left of the budget
        headers[DEFAULT_DEADLINE_HEADER] = str(int(ctx.remaining() * 1000))
    # A hang-up (or the budget's end) closes the upstream stream at once, and the upstream
    # sees its client hang up: a fastapi-hangup service there stops its work too.
    async with clients["upstream"].stream("GET", "/stream", headers=headers) as response:
        async for chunk in response.aiter_raw():
            size += len(chunk)
    return {"size": size}


# --8<-- [end:httpx]
