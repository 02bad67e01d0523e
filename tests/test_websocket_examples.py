"""The websocket examples the docs include, exercised."""

from __future__ import annotations

import time
from types import ModuleType

import anyio
import pytest

from fastapi_hangup import CancelCause
from fastapi_hangup.testing import HangUpClient, HangUpWebSocket

pytestmark = pytest.mark.anyio


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    import examples.websocket_chat as chat

    monkeypatch.setattr(chat, "generations", [])
    return chat


async def test_closing_the_tab_stops_the_generation_within_milliseconds(chat: ModuleType) -> None:
    from examples.websocket_chat import app

    async with HangUpWebSocket(app, "/chat") as ws:
        await ws.send_text("poem")
        assert await ws.receive_text() == "poem-0 "
        await ws.close(1001)  # browsers close with 1001 (going away) when a tab closes
        stopped = time.monotonic()

    assert chat.generations == ["stopped"]
    assert ws.result.finished_at is not None
    assert ws.result.finished_at - stopped < 1.0  # 199 more tokens would take ~10 s
    context = ws.result.context
    assert context is not None
    assert context.cause is CancelCause.CLIENT_DISCONNECTED
    [record] = ws.result.log_records
    assert record.close_code == 1001
    assert ws.result.sent_after_close == []


async def test_a_finished_answer_keeps_the_session_for_the_next_prompt(
    chat: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from examples.websocket_chat import app

    monkeypatch.setattr(chat, "TOKEN_DELAY", 0)
    monkeypatch.setattr(chat, "ANSWER_WORDS", 3)
    async with HangUpWebSocket(app, "/chat") as ws:
        for prompt in ("a", "b"):
            await ws.send_text(prompt)
            tokens = [await ws.receive_text() for _ in range(4)]
            assert tokens == [f"{prompt}-0 ", f"{prompt}-1 ", f"{prompt}-2 ", "[done]"]
        await anyio.sleep(0.01)

    assert chat.generations == ["done", "done"]
    assert ws.result.log_records == []


async def test_the_chat_page_is_served() -> None:
    from examples.websocket_chat import app

    result = await HangUpClient(app).get("/")

    assert result.status_code == 200
    assert b"new WebSocket" in result.body


async def test_the_stop_button_stops_one_generation_and_the_session_goes_on(
    chat: ModuleType,
) -> None:
    from examples.websocket_chat import app

    async with HangUpWebSocket(app, "/chat-with-stop") as ws:
        await ws.send_text("poem")
        assert await ws.receive_text() == "poem-0 "
        await ws.send_text("stop")
        while (token := await ws.receive_text()) != "[stopped]":
            assert token.startswith("poem-")
        await ws.send_text("story")
        assert await ws.receive_text() == "story-0 "
        await ws.close(1001)  # the tab closes during the second generation

    assert chat.generations == ["stopped", "stopped"]
    assert len(ws.result.log_records) == 1  # only the close is a hang-up
    assert ws.result.sent_after_close == []
