"""Pins every FastAPI, Starlette and anyio internal that fastapi-hangup relies on.

When one of these fails after an upgrade, the function of the same name in
``fastapi_hangup/_fastapi.py`` (or ``_backend.py``) needs a look; nothing else should.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request, Response, WebSocket
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import HTTPConnection
from starlette.types import Message

from fastapi_hangup import ClientDisconnected, _fastapi
from fastapi_hangup._backend import is_innermost
from fastapi_hangup._quiet import QUIET_HANDLER
from tests._asgi import BODY_END, DISCONNECT, RecordingSend, ScriptedReceive, http_scope
from tests.test_websocket_routes import websocket_scope

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def quiet(request: Request, exc: Exception) -> Response:
    return Response(status_code=218)


async def run(app: FastAPI, method: str = "GET", path: str = "/") -> RecordingSend:
    send = RecordingSend()
    with anyio.fail_after(5):
        await app(http_scope(method, path), ScriptedReceive([BODY_END]), send)
    return send


async def test_dependencies_see_both_exit_stacks_and_the_api_route() -> None:
    seen: dict[str, object] = {}

    async def look(request: Request) -> None:
        seen["stacks"] = _fastapi.exit_stacks(request.scope)
        seen["endpoint"] = _fastapi.runs_an_endpoint(request.scope)

    app = FastAPI()

    @app.get("/", dependencies=[Depends(look)])
    async def endpoint() -> None: ...

    assert (await run(app)).status == 200
    assert seen["stacks"] is not None
    assert seen["endpoint"] is True


async def test_the_function_stack_closes_before_the_request_stack_and_the_response() -> None:
    order: list[str] = []

    def pushed(name: str) -> Callable[..., bool]:
        def exit_callback(*exc_info: object) -> bool:
            order.append(name)
            return False

        return exit_callback

    async def look(request: Request) -> None:
        stacks = _fastapi.exit_stacks(request.scope)
        assert stacks is not None
        request_stack, function_stack = stacks
        request_stack.push(pushed("request stack"))
        function_stack.push(pushed("function stack"))

    async def endpoint_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            order.append("response")

    app = FastAPI()

    @app.get("/", dependencies=[Depends(look)])
    async def endpoint() -> None:
        order.append("endpoint")

    with anyio.fail_after(5):
        await app(http_scope("GET", "/"), ScriptedReceive([BODY_END]), endpoint_send)
    assert order == ["endpoint", "function stack", "response", "request stack"]


async def test_request_reads_through_its_private_receive_and_keeps_the_route_send() -> None:
    seen: list[Message] = []

    async def replacement() -> Message:
        seen.append(BODY_END)
        return {"type": "http.request", "body": b"replaced", "more_body": False}

    app = FastAPI()

    @app.post("/")
    async def endpoint(request: Request) -> dict[str, object]:
        before = _fastapi.adopt_request(request, replacement, Boom, quiet)
        body = await request.body()
        after = _fastapi.adopt_request(request, replacement, Boom, quiet)
        return {"body": body.decode(), "read": [before, after]}

    send = await run(app, "POST")
    assert send.messages[1]["body"] == b'{"body":"replaced","read":[false,true]}'
    assert seen


async def test_adopt_request_puts_the_handler_in_the_running_handler_table() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(request: Request) -> None:
        _fastapi.adopt_request(request, request.receive, Boom, quiet)
        raise Boom

    assert (await run(app)).status == 218


async def test_adopt_request_keeps_the_apps_own_handler() -> None:
    app = FastAPI()

    @app.exception_handler(Boom)
    async def own(request: Request, exc: Exception) -> Response:
        return Response(status_code=219)

    @app.get("/")
    async def endpoint(request: Request) -> None:
        _fastapi.adopt_request(request, request.receive, Boom, quiet)
        raise Boom

    assert (await run(app)).status == 219


async def test_request_send_is_the_routes_own_send() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(request: Request) -> Response:
        await _fastapi.request_send(request)({"type": "http.response.start", "status": 299})
        await _fastapi.request_send(request)({"type": "http.response.body", "body": b""})
        return Response(status_code=204)

    send = await run(app)
    assert send.messages[0]["status"] == 299  # it reached the client, outside FastAPI's reply


async def test_is_disconnected_peeks_in_a_cancelled_scope() -> None:
    probes: list[bool] = []

    async def receive() -> Message:
        probes.append(_fastapi.is_disconnect_probe())
        return DISCONNECT

    request = Request(http_scope("GET", "/"), receive)
    assert await request.is_disconnected() is True
    assert probes == [True]
    assert _fastapi.is_disconnect_probe() is False


def test_user_middleware_lists_base_http_middleware() -> None:
    app = FastAPI()
    assert not _fastapi.behind_base_http_middleware({"app": app})

    @app.middleware("http")
    async def passthrough(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await call_next(request)

    assert _fastapi.behind_base_http_middleware({"app": app})
    assert any(m.cls == BaseHTTPMiddleware for m in app.user_middleware)  # type: ignore[comparison-overlap]


def test_included_router_keeps_its_routes() -> None:
    router = APIRouter()

    @router.get("/inner")
    async def inner_endpoint() -> None: ...

    app = FastAPI()
    app.include_router(router, prefix="/outer")

    found = [_fastapi.included_router(route) for route in app.routes]
    inner = [router for router in found if router is not None]
    assert len(inner) == 1
    assert [route.path for route in inner[0].routes] == ["/inner"]


def test_fastapi_classifies_callables_as_we_rely_on() -> None:
    async def coroutine() -> None: ...

    def plain() -> None: ...

    async def agen() -> Any:
        yield

    class AsyncCall:
        async def __call__(self) -> None: ...

    assert _fastapi.is_coroutine_callable(coroutine)
    assert _fastapi.is_coroutine_callable(AsyncCall())
    assert not _fastapi.is_coroutine_callable(plain)
    assert _fastapi.is_generator_callable(agen)
    assert not _fastapi.is_generator_callable(plain)


async def test_innermost_cancel_scope_is_told_on_this_backend() -> None:
    with anyio.CancelScope() as outer:
        await anyio.lowlevel.checkpoint()
        assert is_innermost(outer)
        with anyio.CancelScope() as inner:
            await anyio.lowlevel.checkpoint()
            assert is_innermost(inner)
            assert not is_innermost(outer)
        assert is_innermost(outer)


async def test_native_telemetry_keeps_its_request_record_in_the_scope() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    seen: dict[str, Any] = {}

    async def look(request: Request) -> None:
        telemetry = _fastapi.request_telemetry(request.scope)
        assert telemetry is not None
        seen["span"] = telemetry.span
        seen["route"] = _fastapi.route_template(request.scope, telemetry)
        seen["without telemetry"] = _fastapi.route_template(request.scope, None)
        telemetry.status_code = 499  # what the span and the duration metric will report
        raise ClientDisconnected  # answered by sending nothing, as after a hang-up

    app = FastAPI(telemetry={"tracer_provider": TracerProvider()})
    app.add_exception_handler(ClientDisconnected, QUIET_HANDLER)
    items = APIRouter(prefix="/items")
    items.add_api_route("/{item_id}", look)
    app.include_router(items)
    await run(app, path="/items/7")
    assert seen["span"].is_recording() is False  # ended by FastAPI after the app returned
    assert seen["route"] == seen["without telemetry"] == "/items/{item_id}"
    assert seen["span"].attributes["http.response.status_code"] == 499
    assert _fastapi.telemetry_config(app) is not None
    assert _fastapi.telemetry_config(app)["metrics"] is True  # type: ignore[index]
    assert _fastapi.request_telemetry(http_scope("GET", "/")) is None


def test_each_router_counts_the_routes_and_routers_added_to_it() -> None:
    app = FastAPI()
    items = APIRouter()
    app.include_router(items)
    routers = [app.router, items]
    stamps = [_fastapi.routes_stamp(routers)]
    items.add_api_route("/later", lambda: None)  # into the router already included
    stamps.append(_fastapi.routes_stamp(routers))
    app.add_api_route("/top", lambda: None)
    stamps.append(_fastapi.routes_stamp(routers))
    items.include_router(APIRouter())
    stamps.append(_fastapi.routes_stamp(routers))
    assert None not in stamps
    assert len(set(stamps)) == 4
    (entry,) = [r for r in app.router.routes if _fastapi.included_router(r) is not None]
    assert _fastapi.included_router(entry) is items


async def test_one_websocket_reads_and_writes_through_its_private_channels() -> None:
    app = FastAPI()
    seen: list[object] = []
    log: list[Message] = []

    async def swap(connection: HTTPConnection) -> None:
        assert isinstance(connection, WebSocket)
        receive, send = _fastapi.websocket_channels(connection)

        async def logged_send(message: Message) -> None:
            log.append(message)
            await send(message)

        _fastapi.route_websocket(connection, receive, logged_send)
        seen.append(connection)

    @app.websocket("/ws")
    async def endpoint(websocket: WebSocket, _: None = Depends(swap)) -> None:
        seen.append(websocket)
        await websocket.accept()
        await websocket.close()

    receive = ScriptedReceive([{"type": "websocket.connect"}])
    with anyio.fail_after(5):
        await app(websocket_scope("/ws"), receive, RecordingSend())

    assert seen[0] is seen[1]  # the dependency and the endpoint share one WebSocket
    assert [m["type"] for m in log] == ["websocket.accept", "websocket.close"]
