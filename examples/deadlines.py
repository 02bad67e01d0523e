"""A time budget per route, shortened (never extended) by the caller's deadline header."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, FastAPI

from fastapi_hangup import CancelOnDisconnect, cancel_ctx_with

app = FastAPI()

# 2 s of work at most; a proxy (Envoy) or client may ask for less with
# `x-envoy-expected-rq-timeout-ms: 500`.
SearchCtx = Annotated[
    CancelOnDisconnect, Depends(cancel_ctx_with(deadline=2.0, deadline_header=True))
]


async def call_search_backend(q: str, time_limit: float) -> list[str]:
    with anyio.fail_after(time_limit):  # hand the remaining budget downstream
        await anyio.sleep(0.05 * len(q))
        return [q]


@app.get("/search")
async def search(q: str, ctx: SearchCtx) -> dict[str, list[str]]:
    hits = await call_search_backend(q, time_limit=ctx.remaining())
    return {"hits": hits}
