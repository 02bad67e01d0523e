"""A real app's shape: an ``@app.middleware("http")`` and a pool opened in the lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request, Response

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpTransport, assert_cancelled, assert_not_cancelled


class Pool:
    """Stands in for a database pool: connections are lent out and must come back."""

    def __init__(self) -> None:
        self.open = False
        self.lent = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[None]:
        assert self.open, "the pool is not open: did the lifespan run?"
        self.lent += 1
        try:
            yield
        finally:
            self.lent -= 1  # given back, also when the request is cancelled


pool = Pool()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool.open = True
    yield
    pool.open = False


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def timing_header(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    response.headers["server-timing"] = "app"
    return response


@app.get("/report")
async def report(ctx: CancelCtx, seconds: float = 30) -> dict[str, str]:
    async with pool.connection():
        await anyio.sleep(seconds)  # the heavy query
    return {"report": "..."}


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


async def test_the_query_stops_and_gives_its_connection_back(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    with anyio.move_on_after(0.1):
        await hangup_client.get("/report")
    assert_cancelled(hangup_transport.last_request)
    assert pool.lent == 0


async def test_a_client_that_waits_gets_the_report(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    response = await hangup_client.get("/report", params={"seconds": 0.01})
    assert response.json() == {"report": "..."}
    assert response.headers["server-timing"] == "app"
    assert_not_cancelled(hangup_transport.last_request)
