"""The same endpoint with the long form that the CancelCtx alias stands for."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, FastAPI

from fastapi_hangup import CancelOnDisconnect, cancel_ctx

app = FastAPI()


@app.get("/search")
async def search(
    q: str,
    ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx)],
) -> dict[str, str]:
    await anyio.sleep(0.5)  # the search itself
    return {"q": q}
