"""The same hang-up test twice: the httpx way, and the older HangUpClient way."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI

from examples.testing_must_stop import app
from fastapi_hangup.testing import HangUpClient, HangUpTransport, assert_cancelled


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


# An ordinary httpx test: the client gives up, the app's lifespan runs.
async def test_summary_stops(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(0.05):
        await hangup_client.get("/summarise")
    assert_cancelled(hangup_transport.last_request)


# HangUpClient: its own request API, no lifespan, and triggers an httpx client cannot time.
@pytest.mark.anyio
async def test_summary_stops_with_hang_up_client() -> None:
    result = await HangUpClient(app).get("/summarise", hang_up_after_start=0.05)
    assert_cancelled(result)
