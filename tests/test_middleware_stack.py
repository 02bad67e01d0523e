"""Behind ``@app.middleware("http")`` (a ``BaseHTTPMiddleware``), which most real apps have.

Its ``call_next`` raises "No response returned." when the app sends nothing, so there an
abandoned request answers an empty 499 that nobody reads, whichever handler ran. Written as a
user would: an ``httpx.AsyncClient`` that gives up on its request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import httpx
import pytest
from fastapi import FastAPI, Request, Response

from fastapi_hangup import CancelOnDisconnect, ClientDisconnected
from fastapi_hangup.testing import (
    HangUpTransport,
    RequestResult,
    assert_cancelled,
    assert_not_cancelled,
)
from tests._context_apps import EntryPoint
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio


async def slow(ctx: CancelOnDisconnect) -> object:
    await anyio.sleep(5)
    return {}  # pragma: no cover - the client hangs up first


async def abandoned(app: FastAPI) -> RequestResult:
    """What became of ``GET /work`` when the client gives up on it after 20 ms."""
    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with anyio.move_on_after(0.02):
            await client.get("/work")
    return transport.last_request


def behind_middleware(app: FastAPI) -> FastAPI:
    @app.middleware("http")
    async def passthrough(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await call_next(request)

    return app


async def test_hang_up_behind_base_http_middleware_ends_quietly(
    entry: EntryPoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fastapi_hangup")
    app = behind_middleware(entry.app(slow))

    result = await abandoned(app)

    assert_cancelled(result)  # the middleware's 499 is the one message after the hang-up
    assert len(hang_up_records(caplog, 499)) == 1


async def test_own_disconnect_handler_returning_none_behind_the_middleware(
    entry: EntryPoint,
) -> None:
    handled: list[str] = []
    app = behind_middleware(entry.app(slow))

    @app.exception_handler(ClientDisconnected)
    async def count(request: Request, exc: ClientDisconnected) -> None:
        handled.append(request.url.path)

    result = await abandoned(app)

    assert_cancelled(result)  # no "No response returned." escaped
    if entry.name != "route":  # the route class ends the request itself, raising nothing
        assert handled == ["/work"]


async def test_answer_behind_the_middleware_is_untouched(entry: EntryPoint) -> None:
    async def quick(ctx: CancelOnDisconnect) -> object:
        await anyio.lowlevel.checkpoint()
        return {"ok": True}

    app = behind_middleware(entry.app(quick))
    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/work")

    assert response.status_code == 200
    assert response.json() == {"ok": True}
    assert_not_cancelled(transport.last_request)
