"""``ReceiveArbiter`` against a scripted raw ``receive`` that delivers each message once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from starlette.types import Message

from fastapi_hangup._arbiter import ReceiveArbiter
from tests._asgi import DISCONNECT, ScriptedReceive, body_messages

pytestmark = pytest.mark.anyio


class Watched:
    """An arbiter over ``raw`` and the hang-ups it reported."""

    def __init__(self, raw: ScriptedReceive) -> None:
        self.raw = raw
        self.hang_ups = 0
        self.arbiter = ReceiveArbiter(raw, self._hang_up)

    def _hang_up(self) -> None:
        self.hang_ups += 1


@asynccontextmanager
async def watched(*messages: Message, arm: bool = True) -> AsyncIterator[Watched]:
    """Arbitrate a raw receive scripted with ``messages``; stop the watcher afterwards."""
    w = Watched(ScriptedReceive(messages))
    if arm:
        w.arbiter.arm()
    try:
        yield w
    finally:
        w.arbiter.stop()
        with anyio.fail_after(5):
            await w.arbiter.wait_stopped()


async def settle() -> None:
    """Let the watcher run until it waits for something."""
    await anyio.wait_all_tasks_blocked()


async def test_watcher_holds_one_unread_body_message_and_reads_no_further() -> None:
    async with watched(*body_messages([b"a", b"b", b"c"])) as w:
        await settle()
        assert w.raw.calls == 1  # "b" and "c" stay with the server: upload backpressure
        assert w.raw.waiting == 0


async def test_taking_the_held_message_lets_the_watcher_read_the_next() -> None:
    async with watched(*body_messages([b"a", b"b", b"c"])) as w:
        await settle()
        first = await w.arbiter.receive()
        await settle()
        assert first["body"] == b"a"
        assert w.raw.calls == 2


async def test_final_body_message_is_held_while_the_watcher_keeps_listening() -> None:
    async with watched(*body_messages([b"all"])) as w:
        await settle()
        assert w.raw.calls == 2
        assert w.raw.waiting == 1  # listening for the disconnect, body still unread
        w.raw.push(DISCONNECT)
        await settle()
        assert w.hang_ups == 1
        assert await w.arbiter.receive() == body_messages([b"all"])[0]
        assert await w.arbiter.receive() == DISCONNECT


async def test_hang_up_behind_an_unread_non_final_message_is_noticed_once_it_is_taken() -> None:
    async with watched(*body_messages([b"a", b"b"]), DISCONNECT) as w:
        await settle()
        assert w.hang_ups == 0  # the documented pause: the watcher waits for its reader
        await w.arbiter.receive()
        await w.arbiter.receive()
        await settle()
        assert w.hang_ups == 1


async def test_disconnect_is_replayed_to_every_later_reader() -> None:
    async with watched(DISCONNECT) as w:
        with anyio.fail_after(5):
            replies = [await w.arbiter.receive() for _ in range(3)]
        assert replies == [DISCONNECT] * 3
        assert w.raw.calls == 1
        assert w.hang_ups == 1


@pytest.mark.parametrize("arm", [True, False], ids=["armed", "armed-by-reader"])
async def test_every_message_reaches_the_reader_once_and_in_order(arm: bool) -> None:
    sent = [*body_messages(bytes([i]) * 100 for i in range(64)), DISCONNECT]
    async with watched(*sent, arm=arm) as w:
        received: list[Message] = []
        with anyio.fail_after(5):
            for _ in range(len(sent)):
                received.append(await w.arbiter.receive())
        assert received == sent
        assert w.raw.delivered == sent


async def test_two_concurrent_readers_both_get_a_disconnect_delivered_once() -> None:
    async with watched() as w:
        replies: list[Message] = []

        async def read() -> None:
            replies.append(await w.arbiter.receive())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                tg.start_soon(read)
                await settle()
                assert w.raw.max_waiting == 1  # only the watcher ever waits on the raw receive
                w.raw.push(DISCONNECT)
        assert replies == [DISCONNECT, DISCONNECT]


async def test_cancelled_reader_leaves_the_held_message_for_the_next_reader() -> None:
    async with watched(*body_messages([b"a", b"b"])) as w:
        await settle()
        with anyio.CancelScope() as scope:
            scope.cancel()
            await w.arbiter.receive()  # what Request.is_disconnected() does
        assert scope.cancelled_caught
        assert (await w.arbiter.receive())["body"] == b"a"


async def test_stop_hands_the_raw_receive_to_a_waiting_reader() -> None:
    async with watched() as w:
        received: list[Message] = []

        async def read() -> None:
            received.append(await w.arbiter.receive())

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await settle()
                w.arbiter.stop()
                await w.arbiter.wait_stopped()
                await settle()
                assert w.raw.calls == 2  # the watcher's call, withdrawn, then the reader's
                assert w.raw.waiting == 1
                w.raw.push(*body_messages([b"late"]))
        assert received == body_messages([b"late"])


async def test_disconnect_after_stop_is_no_hang_up() -> None:
    async with watched() as w:
        await settle()
        w.arbiter.stop()
        await w.arbiter.wait_stopped()
        w.raw.push(DISCONNECT)
        with anyio.fail_after(5):
            assert await w.arbiter.receive() == DISCONNECT
        assert w.hang_ups == 0


async def test_arm_after_stop_starts_no_watcher() -> None:
    async with watched(*body_messages([b"x"]), arm=False) as w:
        w.arbiter.stop()
        w.arbiter.arm()
        await settle()
        assert w.raw.calls == 0
        assert (await w.arbiter.receive())["body"] == b"x"


async def test_watcher_ends_by_itself_after_a_disconnect() -> None:
    async with watched(DISCONNECT) as w:
        with anyio.fail_after(5):
            await w.arbiter.wait_stopped()  # no stop(): the disconnect was the last message
        assert w.hang_ups == 1


async def test_error_from_the_raw_receive_reaches_every_reader() -> None:
    async with watched() as w:
        await settle()
        error = OSError("the server's receive broke")
        w.raw.fail(error)
        for _ in range(2):
            with anyio.fail_after(5), pytest.raises(OSError, match="broke") as raised:
                await w.arbiter.receive()
            assert raised.value is error
        assert w.hang_ups == 0
