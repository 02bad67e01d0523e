"""A streaming endpoint: leaving ``client.stream()`` before the body ends is a hang-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.responses import StreamingResponse

from fastapi_hangup import CancellableRoute
from fastapi_hangup.testing import HangUpTransport, assert_cancelled

router = APIRouter(route_class=CancellableRoute)  # covers the response body too
rows_made: list[int] = []


@router.get("/export.csv")
async def export() -> StreamingResponse:
    async def rows() -> AsyncIterator[str]:
        for n in range(1000):
            rows_made.append(n)
            yield f"{n},row {n}\n"
            await anyio.sleep(0.01)

    return StreamingResponse(rows(), media_type="text/csv")


app = FastAPI()
app.include_router(router)


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


async def test_the_export_stops_when_the_reader_leaves(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    rows_made.clear()
    lines: list[str] = []
    async with hangup_client.stream("GET", "/export.csv") as response:
        with anyio.move_on_after(0.1):  # read for a while, then leave the block
            async for line in response.aiter_lines():
                lines.append(line)
    assert lines[0] == "0,row 0"
    assert_cancelled(hangup_transport.last_request)
    assert len(rows_made) < 100  # far from the 1000 rows: the generator stopped
