"""A deadline: past its budget the work stops and the client gets a 504."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCause, cancellable
from fastapi_hangup.testing import HangUpTransport, assert_cancelled

app = FastAPI()


@app.get("/translate")
@cancellable(deadline=0.1)
async def translate() -> dict[str, str]:
    await anyio.sleep(30)  # the model never answers in time
    return {"translation": "..."}


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


async def test_translation_answers_504_past_its_deadline(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    response = await hangup_client.get("/translate")  # the client waits: no hang-up
    assert response.status_code == 504
    assert_cancelled(hangup_transport.last_request, CancelCause.DEADLINE_EXCEEDED)
