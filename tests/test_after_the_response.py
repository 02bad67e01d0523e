"""Client left != stream ended: a disconnect after the complete response cancels nothing.

Every server sends ``http.disconnect`` once the response is complete; BackgroundTasks run
after that, and must run to their end whichever entry point guarded the request.

No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
module's globals, where the apps' local names do not live.
"""

import logging
from typing import Literal

import anyio
import anyio.lowlevel
import pytest
from fastapi import BackgroundTasks

from fastapi_hangup import CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient
from tests._context_apps import EntryPoint, app_with
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio

Mode = Literal["once", "repeat"]
MODES = pytest.mark.parametrize("disconnect", ["once", "repeat"])


@MODES
async def test_background_tasks_run_to_completion_after_the_response(
    entry: EntryPoint, disconnect: Mode
) -> None:
    ran: list[str] = []
    router = entry.router()

    async def send_receipt(ctx: CancelOnDisconnect) -> None:
        for step in range(3):
            await anyio.sleep(0.01)  # the disconnect after the response arrives meanwhile
            ran.append(f"step {step}")
        ran.append(f"done, is_cancelled={ctx.is_cancelled}")

    @router.get("/order")
    async def order(ctx: CancelOnDisconnect, tasks: BackgroundTasks) -> dict[str, bool]:
        await anyio.lowlevel.checkpoint()  # the watcher is armed: it would see the disconnect
        tasks.add_task(send_receipt, ctx)
        return {"ok": True}

    result = await HangUpClient(app_with(router), disconnect=disconnect).get("/order")

    assert result.complete
    assert ran == ["step 0", "step 1", "step 2", "done, is_cancelled=False"]


@MODES
async def test_disconnect_after_the_complete_response_is_no_hang_up(
    entry: EntryPoint, disconnect: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    router = entry.router()

    @router.get("/fast")
    async def fast(tasks: BackgroundTasks) -> dict[str, bool]:
        await anyio.lowlevel.checkpoint()
        tasks.add_task(anyio.sleep, 0.05)  # the disconnect arrives while this runs
        return {"ok": True}

    result = await HangUpClient(app_with(router), disconnect=disconnect).get("/fast")

    assert result.status_code == 200
    assert result.body == b'{"ok":true}'
    assert result.context is not None
    assert not result.context.is_cancelled
    assert hang_up_records(caplog) == []


async def test_deadline_never_cancels_background_tasks_after_the_response(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    finished: list[str] = []
    router = entry.router(deadline=0.1)

    async def background_work() -> None:
        await anyio.sleep(0.2)  # outlives the 0.1 s budget
        finished.append("background task done")

    @router.get("/work")
    async def work(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(background_work)
        return {}

    result = await HangUpClient(app_with(router)).get("/work")

    assert result.status_code == 200
    assert finished == ["background task done"]
    assert hang_up_records(caplog) == []
