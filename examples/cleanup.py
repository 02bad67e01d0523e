"""Cleanup that awaits after a hang-up: a ``finally`` block that writes an audit line."""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, add_cancellation

app = FastAPI()
add_cancellation(app)
audit: list[str] = []  # stands in for a table or a log shipper


async def write_audit(line: str) -> None:
    await anyio.sleep(0.01)  # the round trip to the database
    audit.append(line)


async def run_search(q: str) -> list[str]:
    await anyio.sleep(1)  # the expensive part that a hang-up stops
    return [q]


# --8<-- [start:asyncio]
@app.get("/search")
async def search(q: str) -> dict[str, list[str]]:
    try:
        return {"hits": await run_search(q)}
    finally:
        # asyncio: the hang-up was delivered once, at the await above; this await runs.
        # trio: every await in a cancelled scope raises again, so this write is lost.
        await write_audit(f"search {q}")


# --8<-- [end:asyncio]


# --8<-- [start:portable]
@app.get("/search-everywhere")
async def search_everywhere(q: str, ctx: CancelCtx) -> dict[str, list[str]]:
    try:
        return {"hits": await run_search(q)}
    finally:
        with ctx.shield():  # on both backends: the write lands, hang-up or not
            await write_audit(f"search {q}")


# --8<-- [end:portable]
