"""Server-sent events from a generator endpoint stop the moment the client goes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.sse import EventSourceResponse

from fastapi_hangup import CancellableRoute

router = APIRouter(route_class=CancellableRoute)
produced: list[int] = []


@router.get("/ticks", response_class=EventSourceResponse)
async def ticks() -> AsyncIterator[dict[str, int]]:
    for tick in range(1000):
        produced.append(tick)
        yield {"tick": tick}
        await anyio.sleep(0.01)


app = FastAPI()
app.include_router(router)
