"""Testing your own endpoint's hang-up behaviour with fastapi_hangup.testing.

Run it with pytest; it needs no server. Mark tests with ``pytest.mark.anyio``; anyio's
``anyio_backend`` fixture picks the backend (asyncio, or trio if it is installed).
"""

from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCause, CancelCtx, cancellable
from fastapi_hangup.testing import HangUpClient, assert_cancelled, assert_not_cancelled

app = FastAPI()


@app.get("/summarise")
async def summarise(ctx: CancelCtx, seconds: float = 30) -> dict[str, str]:
    await anyio.sleep(seconds)  # the LLM call
    return {"summary": "..."}


@app.get("/translate")
@cancellable(deadline=0.1)
async def translate() -> dict[str, str]:
    await anyio.sleep(30)  # the model never answers in time
    return {"translation": "..."}


@pytest.mark.anyio
async def test_summary_stops_when_the_client_hangs_up() -> None:
    client = HangUpClient(app)
    result = await client.get("/summarise", hang_up_after_start=0.05)
    assert_cancelled(result)  # stopped because the client left, and sent nothing


@pytest.mark.anyio
async def test_translation_answers_504_past_its_deadline() -> None:
    result = await HangUpClient(app).get("/translate")
    assert_cancelled(result, CancelCause.DEADLINE_EXCEEDED)
    assert result.status_code == 504


@pytest.mark.anyio
async def test_a_client_that_waits_gets_its_summary() -> None:
    result = await HangUpClient(app).get("/summarise?seconds=0.01")
    assert_not_cancelled(result)
    assert result.status_code == 200
