"""One request, one context: entry points mixed in one request share it, and its watcher.

The endpoint takes its entry point's context and also declares the dependency three more
ways (through a sub-dependency, uncached, directly): every one of them is the same object,
one watcher reads the raw ``receive``, and a hang-up logs one record.

No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
module's globals, where the apps' local names do not live.
"""

import logging
from typing import Annotated

import anyio
import pytest
from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_hangup import CancelCtx, CancelOnDisconnect, cancel_ctx
from fastapi_hangup.testing import HangUpClient
from tests._context_apps import EntryPoint, app_with
from tests._helpers import hang_up_records
from tests._route_kit import ContextCounter

pytestmark = pytest.mark.anyio

UncachedCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx, use_cache=False)]


async def through_a_dependency(ctx: CancelCtx) -> CancelOnDisconnect:
    return ctx


SubCtx = Annotated[CancelOnDisconnect, Depends(through_a_dependency)]


class ReceiveCounter:
    """ASGI middleware that counts how many callers wait on the raw ``receive`` at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.waiting = 0
        self.max_waiting = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            self.waiting += 1
            self.max_waiting = max(self.max_waiting, self.waiting)
            try:
                return await receive()
            finally:
                self.waiting -= 1

        await self.app(scope, counted, send)


def mixed_app(entry: EntryPoint, seen: list[CancelOnDisconnect], started: anyio.Event) -> FastAPI:
    """``GET /shared`` records every context it was given, then works for 5 s."""
    router = entry.router()

    @router.get("/shared")
    async def shared(
        ctx: CancelOnDisconnect, via_sub: SubCtx, uncached: UncachedCtx, direct: CancelCtx
    ) -> None:
        seen.extend([ctx, via_sub, uncached, direct])
        await anyio.wait_all_tasks_blocked()  # the watcher is armed by now
        started.set()
        await anyio.sleep(5)

    return app_with(router)


async def test_every_use_in_one_request_is_the_one_context(entry: EntryPoint) -> None:
    started = anyio.Event()
    seen: list[CancelOnDisconnect] = []
    counter = ContextCounter(mixed_app(entry, seen, started))

    result = await HangUpClient(counter).get("/shared", hang_up_on=started)

    assert len(seen) == 4
    assert all(ctx is result.context for ctx in seen)
    assert counter.contexts == [seen[0]]  # no entry point started a second one
    assert seen[0].is_cancelled


async def test_one_watcher_reads_the_raw_receive(entry: EntryPoint) -> None:
    started = anyio.Event()
    counter = ReceiveCounter(mixed_app(entry, [], started))

    result = await HangUpClient(counter).get("/shared", hang_up_on=started)

    assert result.cancelled
    assert counter.max_waiting == 1


async def test_a_hang_up_logs_one_record_for_the_one_context(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()

    await HangUpClient(mixed_app(entry, [], started)).get("/shared", hang_up_on=started)

    assert [record.__dict__["status_code"] for record in hang_up_records(caplog)] == [499]
