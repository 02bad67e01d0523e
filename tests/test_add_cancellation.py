"""``add_cancellation(app)``: one call guards, marks and reports a whole app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI, WebSocket
from fastapi.responses import StreamingResponse
from fastapi.routing import APIWebSocketRoute
from starlette.types import ASGIApp

from fastapi_hangup import (
    ALL_METHODS,
    CancelCause,
    CancelCtx,
    CancellableRoute,
    StoppedRequest,
    add_cancellation,
    cancellable,
)
from fastapi_hangup._guard import RequestGuard
from fastapi_hangup._openapi import DESCRIPTION_NOTE, EXTENSION
from fastapi_hangup.testing import (
    HangUpTransport,
    RequestResult,
    assert_cancelled,
    assert_not_cancelled,
)

pytestmark = pytest.mark.anyio

SLOW = 30.0


async def slow() -> dict[str, bool]:
    await anyio.sleep(SLOW)
    return {"ok": True}


def whole_app(stopped: list[StoppedRequest] | None = None, **settings: Any) -> FastAPI:
    """Routes before and after the call, an included router, and every entry point."""
    app = FastAPI()
    app.add_api_route("/before", slow)
    if stopped is not None:
        settings["on_stop"] = stopped.append
    add_cancellation(app, **settings)
    app.add_api_route("/after", slow)
    app.add_api_route("/write", slow, methods=["POST"])

    @app.post("/opted-in")
    @cancellable
    async def opted_in() -> dict[str, bool]:
        return await slow()

    @app.get("/opted-out")
    @cancellable(False)
    async def opted_out() -> dict[str, bool]:
        await anyio.sleep(0.3)
        return {"ok": True}

    @app.post("/with-ctx")
    async def with_ctx(ctx: CancelCtx) -> dict[str, bool]:
        return await slow()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def lines() -> AsyncIterator[bytes]:
            for n in range(1000):
                yield f"{n}\n".encode()
                await anyio.sleep(0.01)

        return StreamingResponse(lines())

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    elsewhere = APIRouter(prefix="/items")
    elsewhere.add_api_route("/{item_id}", slow)
    app.include_router(elsewhere)
    elsewhere.add_api_route("/{item_id}/later", slow)  # into a router already included
    return app


@asynccontextmanager
async def client_for(app: ASGIApp) -> AsyncIterator[tuple[httpx.AsyncClient, HangUpTransport]]:
    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client, transport


async def abandon(app: ASGIApp, method: str, path: str, after: float = 0.05) -> RequestResult:
    """Send a request and give up on it after ``after`` seconds."""
    async with client_for(app) as (client, transport):
        with anyio.move_on_after(after):
            await client.request(method, path)
        return transport.last_request


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/before"),
        ("GET", "/after"),
        ("GET", "/items/7"),
        ("GET", "/items/7/later"),
        ("POST", "/opted-in"),
        ("POST", "/with-ctx"),
    ],
)
async def test_every_guarded_route_is_cancelled_on_hang_up(method: str, path: str) -> None:
    result = await abandon(whole_app(), method, path)
    assert_cancelled(result)


async def test_a_write_is_not_cancelled_unless_asked() -> None:
    result = await abandon(whole_app(), "POST", "/write")
    assert result.context is None  # nothing guarded it
    result = await abandon(whole_app(methods=ALL_METHODS), "POST", "/write")
    assert_cancelled(result)


async def test_cancellable_false_opts_a_route_out() -> None:
    result = await abandon(whole_app(), "GET", "/opted-out", after=0.05)
    assert result.context is None
    assert result.status_code == 200  # the work ran to its end, as without the extension


async def test_the_whole_request_is_covered_a_stream_too() -> None:
    async with client_for(whole_app()) as (client, transport):
        async with client.stream("GET", "/stream") as response:
            with anyio.move_on_after(0.05):
                async for _ in response.aiter_lines():
                    pass
        result = transport.last_request
    assert_cancelled(result)


async def test_the_settings_apply_to_every_route() -> None:
    async with client_for(whole_app(deadline=0.05)) as (client, transport):
        response = await client.get("/items/7")
    assert response.status_code == 504
    assert_cancelled(transport.last_request, CancelCause.DEADLINE_EXCEEDED)


async def test_one_context_per_request_whatever_the_mix(monkeypatch: pytest.MonkeyPatch) -> None:
    app = FastAPI()
    add_cancellation(app)
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/mixed")
    @cancellable(deadline=10)
    async def mixed(ctx: CancelCtx) -> dict[str, bool]:
        return await slow()

    app.include_router(router)
    entered: list[RequestGuard] = []
    enter = RequestGuard.enter

    def counted(guard: RequestGuard) -> None:
        entered.append(guard)
        enter(guard)

    monkeypatch.setattr(RequestGuard, "enter", counted)
    result = await abandon(app, "GET", "/mixed")
    assert_cancelled(result)
    assert len(entered) == 1  # one guard, one watcher, one context


def test_websocket_routes_are_left_alone() -> None:
    (ws_route,) = [r for r in whole_app().routes if isinstance(r, APIWebSocketRoute)]
    assert "handle" not in vars(ws_route)  # not wrapped: it runs as FastAPI made it


async def test_a_normal_request_is_untouched() -> None:
    app = FastAPI()
    add_cancellation(app)

    @app.get("/quick")
    async def quick(q: int) -> dict[str, int]:
        return {"q": q}

    async with client_for(app) as (client, transport):
        response = await client.get("/quick", params={"q": 3})
    assert response.json() == {"q": 3}
    assert_not_cancelled(transport.last_request)


# -- OpenAPI ---------------------------------------------------------------------------------


def operations(app: FastAPI) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    }


def test_every_guarded_operation_is_marked_and_only_those() -> None:
    app = whole_app(tag="cancellable")
    marked = {key for key, op in operations(app).items() if EXTENSION in op}
    assert marked == {
        ("GET", "/before"),
        ("GET", "/after"),
        ("GET", "/stream"),
        ("GET", "/items/{item_id}"),
        ("GET", "/items/{item_id}/later"),
        ("POST", "/opted-in"),
        ("POST", "/with-ctx"),
    }
    for key in marked:
        operation = operations(app)[key]
        assert "499" in operation["responses"], key
        assert "cancellable" in operation["tags"], key
        assert DESCRIPTION_NOTE not in operation.get("description", ""), key  # the full mark


def test_routes_added_after_the_schema_was_built_are_marked() -> None:
    app = whole_app()
    assert ("GET", "/late") not in operations(app)
    app.add_api_route("/late", slow)
    assert EXTENSION in operations(app)[("GET", "/late")]


def test_callbacks_and_webhooks_are_never_marked() -> None:
    app = FastAPI()
    add_cancellation(app)
    callbacks = APIRouter()

    @callbacks.get("{$callback_url}/done")
    async def done() -> None: ...

    @app.webhooks.get("new-item")
    async def new_item() -> None: ...

    @app.get("/subscribe", callbacks=callbacks.routes)
    async def subscribe() -> None: ...

    schema = app.openapi()
    callback = schema["paths"]["/subscribe"]["get"]["callbacks"]["done"]
    assert EXTENSION in schema["paths"]["/subscribe"]["get"]
    assert EXTENSION not in str(callback)
    assert EXTENSION not in str(schema["webhooks"])


# -- misuse ----------------------------------------------------------------------------------


def test_twice_is_an_error_that_says_what_to_do() -> None:
    app = FastAPI()
    add_cancellation(app)
    with pytest.raises(RuntimeError, match="already called for this app; pass every setting"):
        add_cancellation(app, deadline=1)


def test_only_a_fastapi_app() -> None:
    with pytest.raises(TypeError, match="takes a FastAPI app"):
        add_cancellation(APIRouter())  # type: ignore[arg-type]


async def test_after_the_app_started_is_an_error() -> None:
    app = FastAPI()
    async with client_for(app) as (client, _):
        await client.get("/docs")
    with pytest.raises(RuntimeError, match="before the app serves its first request"):
        add_cancellation(app)


def test_a_misplaced_decorator_is_reported_at_the_call() -> None:
    app = FastAPI()

    @cancellable
    @app.get("/wrong")
    async def wrong() -> None: ...

    with pytest.raises(TypeError, match="@cancellable is above the route decorator"):
        add_cancellation(app)


def test_bad_settings_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        add_cancellation(FastAPI(), deadline=0)
    with pytest.raises(ValueError, match="unknown HTTP methods"):
        add_cancellation(FastAPI(), methods={"FETCH"})
    with pytest.raises(TypeError, match="on_stop must be a function"):
        add_cancellation(FastAPI(), on_stop="print")  # type: ignore[arg-type]


# -- the on_stop hook ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("GET", "/before", "/before"),
        ("GET", "/items/7", "/items/{item_id}"),
        ("POST", "/opted-in", "/opted-in"),
        ("POST", "/with-ctx", "/with-ctx"),
    ],
)
async def test_the_hook_hears_once_of_every_stopped_request(
    method: str, path: str, route: str
) -> None:
    stopped: list[StoppedRequest] = []
    await abandon(whole_app(stopped), method, path, after=0.1)
    (one,) = stopped
    assert (one.method, one.path, one.route) == (method, path, route)
    assert (one.cause, one.status_code) == (CancelCause.CLIENT_DISCONNECTED, 499)
    assert 0 < one.work_seconds < 5  # seconds; the client's 0.1 s include the app's startup
    assert one.latency_seconds is not None
    assert 0 <= one.latency_seconds < one.work_seconds


async def test_the_hook_hears_of_a_route_class_route_and_a_deadline() -> None:
    stopped: list[StoppedRequest] = []
    app = FastAPI()
    add_cancellation(app, on_stop=stopped.append, methods=())
    router = APIRouter(route_class=CancellableRoute)
    router.add_api_route("/route", slow)
    app.include_router(router)

    @app.get("/budget")
    @cancellable(deadline=0.05)
    async def budget() -> dict[str, bool]:
        return await slow()

    await abandon(app, "GET", "/route")
    async with client_for(app) as (client, _):
        assert (await client.get("/budget", headers={"x-request-id": "r-1"})).status_code == 504

    assert [(s.route, s.cause, s.status_code) for s in stopped] == [
        ("/route", CancelCause.CLIENT_DISCONNECTED, 499),
        ("/budget", CancelCause.DEADLINE_EXCEEDED, 504),
    ]
    assert stopped[1].request_id == "r-1"
    assert stopped[1].latency_seconds is not None
    assert stopped[1].latency_seconds >= 0


async def test_a_failing_hook_is_logged_and_the_request_still_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(stopped: StoppedRequest) -> None:
        raise ValueError("metrics backend down")

    app = FastAPI()
    add_cancellation(app, on_stop=broken)
    app.add_api_route("/slow", slow)
    result = await abandon(app, "GET", "/slow")
    assert_cancelled(result)
    (failure,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "the on_stop hook failed for GET /slow" in failure.getMessage()
    assert failure.exc_info is not None
    assert "metrics backend down" in str(failure.exc_info[1])
