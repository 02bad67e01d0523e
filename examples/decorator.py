"""@cancellable: make one endpoint cancellable without touching its signature."""

from __future__ import annotations

import time

import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, cancellable, document_cancellation

app = FastAPI()


@app.get("/search")
@cancellable  # under the route decorator, next to the function
async def search(q: str) -> dict[str, str]:
    await anyio.sleep(0.5)  # the search itself
    return {"q": q}


@app.get("/export")
@cancellable
def export(ctx: CancelCtx, rows: int = 100) -> dict[str, int]:
    """A sync endpoint stops cooperatively: it reads ctx.is_cancelled between steps."""
    done = 0
    while done < rows and not ctx.is_cancelled:
        time.sleep(0.01)  # one step of the export
        done += 1
    return {"rows": done}


document_cancellation(app)  # mark the guarded operations in the OpenAPI document
