"""A router-wide policy: cancel every method, and tag cancellable operations."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, FastAPI

from fastapi_hangup import ALL_METHODS, cancellable_route

router = APIRouter(route_class=cancellable_route(methods=ALL_METHODS, tag="cancellable"))


@router.post("/translations")  # this POST only computes: safe to cancel
async def translate(text: str) -> dict[str, str]:
    await anyio.sleep(1)  # the model call
    return {"translation": text[::-1]}


app = FastAPI()
app.include_router(router)
