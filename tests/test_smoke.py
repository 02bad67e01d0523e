from __future__ import annotations

import anyio
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpClient

pytestmark = pytest.mark.anyio


async def test_hang_up_cancels_the_endpoint() -> None:
    app = FastAPI()
    finished: list[bool] = []

    @app.get("/slow")
    async def slow(ctx: CancelCtx) -> dict[str, bool]:
        try:
            await anyio.sleep(5)
        finally:
            finished.append(ctx.is_cancelled)
        return {"ok": True}

    result = await HangUpClient(app).get("/slow", hang_up_after=0.05)
    assert result.hung_up
    assert result.cancelled
    assert result.messages == []
    assert finished == [True]
