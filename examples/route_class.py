"""A router whose routes all stop when their client hangs up: CancellableRoute."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from fastapi_hangup import CancelCtx, CancellableRoute, cancellable

router = APIRouter(route_class=CancellableRoute)
orders: list[str] = []


@router.get("/reports/{name}")  # GET is safe: cancelled by default
async def report(name: str) -> dict[str, str]:
    await anyio.sleep(1)  # building the report
    return {"report": name}


@router.get("/reports/{name}/stream")  # a streaming body is covered too
async def stream_report(name: str, ctx: CancelCtx) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for line in range(1000):
            yield f"{name} line {line}\n"
            await anyio.sleep(0.01)

    return StreamingResponse(lines(), media_type="text/plain")


@router.post("/orders")  # POST writes: not cancelled unless you opt in
async def create_order(item: str) -> dict[str, str]:
    await anyio.sleep(0.2)
    orders.append(item)
    return {"created": item}


@router.post("/previews")  # a POST that only reads: opted in
@cancellable
async def preview(item: str) -> dict[str, str]:
    await anyio.sleep(1)
    return {"preview": item}


@router.get("/health")  # opted out: never cancelled
@cancellable(False)
async def health() -> dict[str, str]:
    return {"status": "ok"}


app = FastAPI()
app.include_router(router)
