"""An endpoint that must stop when its client gives up: an ordinary httpx test."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpTransport, assert_cancelled

app = FastAPI()


@app.get("/summarise")
async def summarise(ctx: CancelCtx) -> dict[str, str]:
    await anyio.sleep(30)  # the LLM call
    return {"summary": "..."}


@pytest.fixture
def hangup_app() -> FastAPI:
    return app  # or once for all tests: hangup_app = "myproject.main:app" in the pytest ini


async def test_summary_stops_when_the_client_gives_up(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(0.1):
        await hangup_client.get("/summarise")  # the client gives up after 0.1 s
    assert_cancelled(hangup_transport.last_request)  # stopped because it left, sent nothing
