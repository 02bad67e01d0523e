"""Testing your own endpoint's hang-up behaviour with fastapi_hangup.testing.

Run it with pytest; it needs no server. Mark tests with ``pytest.mark.anyio``; anyio's
``anyio_backend`` fixture picks asyncio (the default) or trio.
"""

from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpClient

app = FastAPI()


@app.get("/summarise")
async def summarise(ctx: CancelCtx) -> dict[str, str]:
    await anyio.sleep(30)  # the LLM call
    return {"summary": "..."}


@pytest.mark.anyio
async def test_summary_stops_when_the_client_hangs_up() -> None:
    client = HangUpClient(app)
    result = await client.get("/summarise", hang_up_after=0.05)
    assert result.cancelled  # the endpoint's work was stopped
    assert result.messages == []  # and nothing was sent to the departed client
