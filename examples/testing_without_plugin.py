"""The transport without the pytest plugin: any entered httpx client, as with ASGITransport."""

from __future__ import annotations

import anyio
import httpx
import pytest

from examples.testing_must_stop import app
from fastapi_hangup.testing import HangUpTransport, assert_cancelled


@pytest.mark.anyio
async def test_summary_stops_with_a_hand_made_client() -> None:
    transport = HangUpTransport(app, disconnect="repeat")  # uvicorn's manner, for once
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with anyio.move_on_after(0.1):
            await client.get("/summarise")
    assert_cancelled(transport.last_request)
