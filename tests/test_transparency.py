"""Transparent when nothing goes wrong: a guarded app answers exactly like its unguarded twin.

The same routes are registered on ``entry.router()`` and on a plain ``APIRouter``; every
request must get the same ASGI messages from both, whatever the entry point.

No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
module's globals, where the apps' local dependencies do not live.
"""

import functools
import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from fastapi_hangup import CancelOnDisconnect
from fastapi_hangup.testing import HangUpClient
from tests._asgi import BODY_END, RecordingSend, ScriptedReceive, http_scope
from tests._context_apps import EntryPoint

pytestmark = pytest.mark.anyio


class Public(BaseModel):
    name: str


class Item(BaseModel):
    name: str
    price: float = 0.0


class TeapotError(Exception):
    pass


async def current_user(x_user: str = Header()) -> str:
    return x_user.upper()


def twin_app(router: APIRouter) -> FastAPI:
    """The same routes on ``router``: guarded (``entry.router()``) or plain (``APIRouter()``)."""

    @router.get("/http-error")
    async def http_error() -> None:
        await anyio.lowlevel.checkpoint()
        raise HTTPException(status_code=418, detail={"why": "teapot"}, headers={"X-Why": "tea"})

    @router.get("/typed/{number}")
    async def typed(number: int, limit: int = 10) -> dict[str, int]:
        await anyio.lowlevel.checkpoint()
        return {"number": number, "limit": limit}

    @router.post("/public")
    async def create(item: Public) -> Public:
        await anyio.lowlevel.checkpoint()
        return item

    @router.get("/custom-error")
    async def custom_error() -> None:
        await anyio.lowlevel.checkpoint()
        raise TeapotError("short and stout")

    @router.get("/filtered", response_model=Public)
    async def filtered() -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        return {"name": "visible", "secret": "hidden"}

    @router.post("/created", status_code=201)
    async def created(response: Response, item: Public) -> Public:
        await anyio.lowlevel.checkpoint()
        response.headers["X-Created"] = item.name
        return item

    @router.delete("/gone", status_code=204)
    async def gone() -> None:
        await anyio.lowlevel.checkpoint()

    @router.put("/items/{item_id}")
    async def update_item(
        item_id: int,
        item: Item,
        q: str | None = None,
        user: str = Depends(current_user),
    ) -> dict[str, Any]:
        await anyio.lowlevel.checkpoint()
        return {"item_id": item_id, "item": item.model_dump(), "q": q, "user": user}

    @router.get("/sync/{number}")
    def sync_typed(number: int, rows: int = 3) -> dict[str, int]:
        return {"number": number, "rows": rows}

    @router.get("/boom")
    async def boom() -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("missing")

    app = FastAPI()

    @app.exception_handler(TeapotError)
    async def on_teapot(request: Request, exc: TeapotError) -> JSONResponse:
        return JSONResponse({"mine": str(exc)}, status_code=409, headers={"X-Handler": "teapot"})

    app.include_router(router)
    return app


@functools.cache
def twin(entry: EntryPoint | None) -> FastAPI:
    """The twin app, guarded by ``entry`` or plain; built once (FastAPI is slow to build
    routes, and an app keeps no state between these requests)."""
    return twin_app(APIRouter() if entry is None else entry.router())


JSON = {"content-type": "application/json"}
USER = {**JSON, "x-user": "ann"}
TWIN_REQUESTS = [
    pytest.param("GET", "/http-error", b"", {}, 418, id="http-exception-with-headers"),
    pytest.param("GET", "/typed/5?limit=2", b"", {}, 200, id="plain-success"),
    pytest.param("GET", "/typed/abc", b"", {}, 422, id="path-validation-error"),
    pytest.param("GET", "/typed/5?limit=x", b"", {}, 422, id="query-validation-error"),
    pytest.param("POST", "/public", b'{"name": 1}', JSON, 422, id="body-validation-error"),
    # FastAPI parses the body before it solves dependencies: cancel_ctx never runs here.
    pytest.param("POST", "/public", b'{"name":', JSON, 422, id="invalid-json"),
    pytest.param("GET", "/custom-error", b"", {}, 409, id="custom-exception-handler"),
    pytest.param("GET", "/filtered", b"", {}, 200, id="response-model-filtering"),
    pytest.param("POST", "/created", b'{"name":"ann"}', JSON, 201, id="custom-status-and-header"),
    pytest.param("DELETE", "/gone", b"", {}, 204, id="no-content"),
    pytest.param("PUT", "/items/7?q=hi", b'{"name":"pen","price":2}', USER, 200, id="params"),
    pytest.param("PUT", "/items/7", b'{"name":"pen"}', USER, 200, id="params-no-query"),
    pytest.param("PUT", "/items/seven", b'{"name":"pen"}', USER, 422, id="params-bad-path"),
    pytest.param("PUT", "/items/7", b'{"price":2}', USER, 422, id="params-bad-body"),
    pytest.param("PUT", "/items/7", b'{"name":"pen"}', JSON, 422, id="missing-header-dependency"),
    pytest.param("GET", "/sync/4?rows=2", b"", {}, 200, id="sync-endpoint"),
    pytest.param("GET", "/nowhere", b"", {}, 404, id="no-route"),
]


@pytest.mark.parametrize(("method", "url", "body", "headers", "status"), TWIN_REQUESTS)
async def test_guarded_app_answers_exactly_as_its_unguarded_twin(
    entry: EntryPoint, method: str, url: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    guarded = await HangUpClient(twin(entry)).request(method, url, body=body, headers=headers)
    plain = await HangUpClient(twin(None)).request(method, url, body=body, headers=headers)

    assert plain.status_code == status
    assert guarded.messages == plain.messages
    assert not guarded.cancelled


async def test_twin_requests_go_through_the_guard(entry: EntryPoint) -> None:
    result = await HangUpClient(twin(entry)).get("/typed/5")

    assert result.context is not None  # the twin comparison really went through a guard
    assert not result.context.is_cancelled


async def test_guarded_endpoint_receives_path_query_body_and_dependency_values(
    entry: EntryPoint,
) -> None:
    result = await HangUpClient(twin(entry)).request(
        "PUT", "/items/7?q=hi", body=b'{"name":"pen","price":2}', headers=USER
    )

    assert result.status_code == 200
    assert result.body == b'{"item_id":7,"item":{"name":"pen","price":2.0},"q":"hi","user":"ANN"}'


async def test_response_model_filtering_drops_the_extra_field_when_guarded(
    entry: EntryPoint,
) -> None:
    result = await HangUpClient(twin(entry)).get("/filtered")

    assert json.loads(result.body) == {"name": "visible"}


async def test_exception_handler_gets_the_endpoints_own_exception_not_a_group(
    entry: EntryPoint,
) -> None:
    raised: list[ValueError] = []
    handled: list[Exception] = []
    router = entry.router()

    @router.get("/bad")
    async def bad(ctx: CancelOnDisconnect) -> None:
        await anyio.lowlevel.checkpoint()
        error = ValueError("bad value")
        raised.append(error)
        raise error

    app = FastAPI()

    @app.exception_handler(ValueError)
    async def on_value_error(request: Request, exc: ValueError) -> JSONResponse:
        handled.append(exc)
        return JSONResponse({"error": str(exc)}, status_code=400)

    app.include_router(router)
    result = await HangUpClient(app).get("/bad")

    assert result.status_code == 400
    assert handled == raised
    assert type(handled[0]) is ValueError


async def test_unhandled_error_escapes_the_app_as_itself_not_a_group(entry: EntryPoint) -> None:
    app = twin(entry)
    send = RecordingSend()

    with anyio.fail_after(5), pytest.raises(KeyError) as raised:
        await app(http_scope("GET", "/boom"), ScriptedReceive([BODY_END]), send)

    assert type(raised.value) is KeyError
    assert send.status == 500  # Starlette's ServerErrorMiddleware, as without the extension
