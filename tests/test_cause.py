"""``ctx.cause`` and ``ctx.is_cancelled``: why the work was cancelled, through every entry point."""

from __future__ import annotations

import logging
from typing import Literal

import anyio
import pytest

from fastapi_hangup import CancelCause, CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient
from tests._asgi import BODY_END, RecordingSend, ScriptedReceive, http_scope
from tests._context_apps import EntryPoint
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio

Observation = tuple[str, CancelCause | None, bool]


def observe(ctx: CancelOnDisconnect, where: str) -> Observation:
    return (where, ctx.cause, ctx.is_cancelled)


async def test_cause_is_none_while_the_endpoint_works(entry: EntryPoint) -> None:
    seen: list[Observation] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append(observe(ctx, "before"))
        await anyio.sleep(0.01)
        seen.append(observe(ctx, "after"))
        return {}

    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    assert seen == [("before", None, False), ("after", None, False)]


async def test_cause_stays_none_after_a_normal_completion(entry: EntryPoint) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        await anyio.sleep(0.01)
        return {"done": True}

    result = await HangUpClient(entry.app(work)).get("/work")

    assert result.status_code == 200
    assert result.body == b'{"done":true}'
    assert result.context is not None
    assert result.context.cause is None
    assert not result.context.is_cancelled


async def test_cause_stays_none_after_completion_even_once_the_deadline_has_passed(
    entry: EntryPoint,
) -> None:
    async def work(ctx: CancelOnDisconnect) -> object:
        return {}

    result = await HangUpClient(entry.app(work, deadline=0.05)).get("/work")
    await anyio.sleep(0.1)  # the budget would have run out by now

    assert result.status_code == 200
    assert result.context is not None
    assert result.context.cause is None
    assert not result.context.is_cancelled


async def test_cause_is_client_disconnected_after_a_hang_up(entry: EntryPoint) -> None:
    started = anyio.Event()
    seen: list[Observation] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            seen.append(observe(ctx, "finally"))
        return {}

    result = await HangUpClient(entry.app(work)).get("/work", hang_up_on=started)

    assert result.hung_up
    assert seen == [("finally", CancelCause.CLIENT_DISCONNECTED, True)]
    assert result.context is not None
    assert result.context.cause is CancelCause.CLIENT_DISCONNECTED


async def test_cause_is_deadline_exceeded_after_the_budget(entry: EntryPoint) -> None:
    seen: list[Observation] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        try:
            await anyio.sleep(5)
        finally:
            seen.append(observe(ctx, "finally"))
        return {}

    result = await HangUpClient(entry.app(work, deadline=0.05)).get("/work")

    assert result.status_code == 504
    assert seen == [("finally", CancelCause.DEADLINE_EXCEEDED, True)]
    assert result.context is not None
    assert result.context.cause is CancelCause.DEADLINE_EXCEEDED


Ending = Literal["completes", "hang-up", "deadline"]


@pytest.mark.parametrize("ending", ["completes", "hang-up", "deadline"])
async def test_is_cancelled_agrees_with_cause_at_every_observation_point(
    entry: EntryPoint, ending: Ending
) -> None:
    started = anyio.Event()
    seen: list[Observation] = []
    work_time = 0.01 if ending == "completes" else 5.0

    async def work(ctx: CancelOnDisconnect) -> object:
        seen.append(observe(ctx, "before"))
        started.set()
        try:
            await anyio.sleep(work_time)
            seen.append(observe(ctx, "after"))
        finally:
            seen.append(observe(ctx, "finally"))
        return {}

    app = entry.app(work, deadline=0.05 if ending == "deadline" else None)
    hang_up_on = started if ending == "hang-up" else None
    result = await HangUpClient(app).get("/work", hang_up_on=hang_up_on)
    assert result.context is not None
    seen.append(observe(result.context, "after the request"))

    assert [where for where, _, _ in seen][-2:] == ["finally", "after the request"]
    for where, cause, cancelled in seen:
        assert cancelled == (cause is not None), where
    expected = {
        "completes": None,
        "hang-up": CancelCause.CLIENT_DISCONNECTED,
        "deadline": CancelCause.DEADLINE_EXCEEDED,
    }
    assert seen[-1][1] is expected[ending]


# -- Cancelled from outside: the server cancels the request's task -------------------------
#
# What we observe: the cancellation reaches the endpoint at its await and propagates out of
# the ASGI app (it must: the server is the one cancelling). The context learns the cause only
# while it closes, after the endpoint unwound, so in the endpoint's own ``finally`` the cause
# is still None (and is_cancelled False: the two agree); afterwards it is SERVER_SHUTDOWN.
# Nothing is sent and no 499 record is written: the request was not abandoned by its client.


async def cancel_from_outside(
    entry: EntryPoint, seen: list[Observation]
) -> tuple[anyio.CancelScope, list[str], RecordingSend, list[CancelOnDisconnect]]:
    """Run the app in a cancel scope and cancel that scope once the endpoint works."""
    started = anyio.Event()
    contexts: list[CancelOnDisconnect] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        contexts.append(ctx)
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            seen.append(observe(ctx, "finally"))
        return {}

    app = entry.app(work)
    receive = ScriptedReceive([BODY_END])
    send = RecordingSend()
    outcome: list[str] = []

    async def call_app() -> None:
        try:
            await app(http_scope("GET", "/work"), receive, send)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancellation propagated")
            raise
        outcome.append("returned")

    with anyio.fail_after(5), anyio.CancelScope() as outer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(call_app)
            await started.wait()
            outer.cancel()
    return outer, outcome, send, contexts


async def test_cancellation_from_outside_propagates_out_of_the_app(entry: EntryPoint) -> None:
    outer, outcome, send, _ = await cancel_from_outside(entry, [])

    assert outcome == ["cancellation propagated"]
    assert outer.cancelled_caught
    assert send.messages == []


async def test_cause_is_server_shutdown_after_a_cancellation_from_outside(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    seen: list[Observation] = []

    _, _, _, (ctx,) = await cancel_from_outside(entry, seen)

    assert ctx.cause is CancelCause.SERVER_SHUTDOWN
    assert ctx.is_cancelled
    assert seen == [("finally", None, False)]  # known only once the endpoint unwound
    (record,) = hang_up_records(caplog)  # reported once, like every stopped request
    assert (record.cause, record.status_code) == ("server_shutdown", None)  # type: ignore[attr-defined]
    assert "cancelled by the server" in record.getMessage()
