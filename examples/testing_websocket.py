"""A chat whose generation must stop when the tab closes: a test with HangUpWebSocket."""

from __future__ import annotations

import pytest

from examples.websocket_chat import app
from fastapi_hangup.testing import HangUpWebSocket


@pytest.mark.anyio
async def test_the_generation_stops_when_the_tab_closes() -> None:
    async with HangUpWebSocket(app, "/chat") as ws:
        await ws.send_text("a poem")
        await ws.receive_text()  # the first token: the generation runs
        await ws.close(1001)  # the tab closes (ws.drop() for a lost connection)
    result = ws.result
    assert result.context is not None
    assert result.context.is_cancelled
    assert result.sent_after_close == []  # nothing was sent to the closed socket
    [record] = result.log_records  # the one "work stopped" record, with the close code
    assert record.close_code == 1001
