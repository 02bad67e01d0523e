"""Pinning the asyncio backend, for asyncio-only libraries such as asyncpg or SQLAlchemy.

A test that takes ``hangup_client`` runs once per ``anyio_backend``: asyncio and trio by
default. An app whose lifespan opens an asyncpg pool cannot run on trio, so the test module
(or a conftest) pins the backend by overriding that fixture.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpTransport, assert_cancelled


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # asyncpg.create_pool() needs the running asyncio loop, exactly like this line:
    app.state.loop = asyncio.get_running_loop()
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/orders")
async def orders(ctx: CancelCtx) -> list[str]:
    await anyio.sleep(30)  # the slow query
    return []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # this module's tests run on asyncio only


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


@pytest.mark.anyio  # not needed with hangup_client, but say it for tests without it
async def test_the_query_stops_on_asyncio(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    with anyio.move_on_after(0.1):
        await hangup_client.get("/orders")
    assert_cancelled(hangup_transport.last_request)
