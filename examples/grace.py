"""A grace period: stop at a safe point yourself before the cancellation arrives."""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, cancellable

app = FastAPI()
pages_written: list[int] = []


@app.post("/exports")
@cancellable(grace=0.5)  # on hang-up: is_cancelled at once, cancellation 0.5 s later
async def export(ctx: CancelCtx, pages: int = 100) -> dict[str, int]:
    for page in range(pages):
        if ctx.is_cancelled:
            break  # between two pages: a safe point to stop
        with ctx.shield(timeout=1.0):  # one page is written whole, but in 1 s at most
            await anyio.sleep(0.02)
            pages_written.append(page)
    return {"pages": len(pages_written)}
