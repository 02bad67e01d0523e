"""``CancellableRoute``: the method policy, whole-request coverage, and transparency.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
dependencies do not live.
"""

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import pytest
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
)
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel

from fastapi_hangup import (
    ALL_METHODS,
    CancelCtx,
    CancellableRoute,
    CancelOnDisconnect,
    cancellable,
    cancellable_route,
)
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._asgi import BODY_END, RecordingSend, ScriptedReceive, http_scope
from tests._route_kit import ContextCounter, abandoned_generators_tolerated

pytestmark = pytest.mark.anyio

F = TypeVar("F", bound=Callable[..., Any])
Mark = Callable[[Callable[..., Any]], Callable[..., Any]]
Mode = Literal["once", "repeat"]
MODES = pytest.mark.parametrize("disconnect", ["once", "repeat"])


def undecorated(func: F) -> F:
    return func


def app_with(router: APIRouter) -> FastAPI:
    app = FastAPI()
    app.include_router(router)
    return app


def hang_up_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fastapi_hangup"]


async def assert_stopped_producing(produced: list[int], result: RequestResult) -> None:
    """The body's producer stopped promptly after the hang-up, far short of its end."""
    assert result.hung_up_at is not None
    assert time.monotonic() - result.hung_up_at < 2.0  # milliseconds in practice
    count = len(produced)
    await anyio.sleep(0.1)  # ten more items, if it were still running
    assert len(produced) == count < 100  # of 1000


# -- The policy matrix: method x endpoint mark x router policy ------------------------------

METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
EVERY = frozenset(METHODS)
NONE: frozenset[str] = frozenset()

ROUTERS: dict[str, type[CancellableRoute]] = {
    "CancellableRoute": CancellableRoute,
    "all-methods": cancellable_route(methods=ALL_METHODS),
    "marked-only": cancellable_route(methods=()),
}
MARKS: dict[str, Mark] = {
    "unmarked": undecorated,
    "@cancellable": cancellable,
    "@cancellable(False)": cancellable(False),
}
#: (router, endpoint mark) -> the methods whose requests a hang-up cancels.
CANCELLED = {
    ("CancellableRoute", "unmarked"): SAFE,
    ("CancellableRoute", "@cancellable"): EVERY,
    ("CancellableRoute", "@cancellable(False)"): NONE,
    ("all-methods", "unmarked"): EVERY,
    ("all-methods", "@cancellable"): EVERY,
    ("all-methods", "@cancellable(False)"): NONE,
    ("marked-only", "unmarked"): NONE,
    ("marked-only", "@cancellable"): EVERY,
    ("marked-only", "@cancellable(False)"): NONE,
}
MATRIX = [
    pytest.param(router, mark, method, method in methods, id=f"{router}-{mark}-{method}")
    for (router, mark), methods in CANCELLED.items()
    for method in METHODS
]


@pytest.mark.parametrize(("router_name", "mark", "method", "cancelled"), MATRIX)
async def test_policy_decides_whether_a_hang_up_cancels(
    router_name: str, mark: str, method: str, cancelled: bool
) -> None:
    router = APIRouter(route_class=ROUTERS[router_name])
    completed: list[str] = []

    async def work() -> None:
        await anyio.sleep(0.3)
        completed.append(method)

    router.api_route("/work", methods=list(METHODS))(MARKS[mark](work))
    result = await HangUpClient(app_with(router)).request(method, "/work", hang_up_after=0.05)

    assert result.hung_up
    assert result.cancelled is cancelled
    assert completed == ([] if cancelled else [method])
    assert result.complete is not cancelled


# -- The whole request: dependencies before the endpoint --------------------------------------


async def test_hang_up_while_an_async_dependency_is_solved_cancels_it() -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def slow_lookup() -> str:
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            steps.append("dependency finally")
        return "found"

    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(found: str = Depends(slow_lookup)) -> dict[str, str]:
        steps.append("endpoint")
        return {}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ["dependency finally"]
    assert result.messages == []


async def test_hang_up_during_a_yield_dependencys_setup_cancels_it() -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def session() -> AsyncIterator[str]:
        started.set()
        try:
            await anyio.sleep(5)  # connecting
        finally:
            steps.append("setup interrupted")
        yield "session"
        steps.append("teardown")

    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(db: str = Depends(session)) -> dict[str, str]:
        steps.append("endpoint")
        return {}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ["setup interrupted"]
    assert result.messages == []


async def test_yield_dependency_cleans_up_after_the_endpoint_is_cancelled() -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def session() -> AsyncIterator[str]:
        try:
            yield "session"
        finally:
            steps.append("cleanup")

    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(db: str = Depends(session)) -> dict[str, str]:
        started.set()
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_on=started)

    assert result.cancelled
    assert steps == ["cleanup"]
    assert result.messages == []


# -- The whole request: streaming bodies ------------------------------------------------------


async def test_hang_up_stops_a_streaming_response_body() -> None:
    produced: list[int] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(1000):  # 10 s if nobody stops it
                produced.append(n)
                yield b"chunk\n"
                await anyio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    with abandoned_generators_tolerated():
        result = await HangUpClient(app_with(router)).get("/stream", hang_up_after_body_chunks=3)

    assert result.cancelled
    assert result.sent_after_hang_up == []
    await assert_stopped_producing(produced, result)


async def test_hang_up_stops_a_server_sent_events_generator_endpoint() -> None:
    sse = pytest.importorskip("fastapi.sse")
    produced: list[int] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/ticks", response_class=sse.EventSourceResponse)
    async def ticks() -> AsyncIterator[dict[str, int]]:
        for tick in range(1000):
            produced.append(tick)
            yield {"tick": tick}
            await anyio.sleep(0.01)

    with abandoned_generators_tolerated():
        result = await HangUpClient(app_with(router)).get("/ticks", hang_up_after_body_chunks=3)

    assert result.headers["content-type"].startswith("text/event-stream")
    assert result.cancelled
    assert result.sent_after_hang_up == []
    await assert_stopped_producing(produced, result)


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_hang_up_stops_a_json_lines_generator_endpoint(kind: str) -> None:
    produced: list[int] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/async")
    async def async_lines() -> AsyncIterator[dict[str, int]]:
        for line in range(1000):
            produced.append(line)
            yield {"line": line}
            await anyio.sleep(0.01)

    @router.get("/sync")
    def sync_lines() -> Iterator[dict[str, int]]:
        for line in range(1000):
            produced.append(line)
            yield {"line": line}
            time.sleep(0.01)

    app = app_with(router)
    with abandoned_generators_tolerated():
        result = await HangUpClient(app).get(f"/{kind}", hang_up_after_body_chunks=3)

    assert result.headers["content-type"] == "application/jsonl"
    assert result.cancelled
    assert result.sent_after_hang_up == []
    await assert_stopped_producing(produced, result)


async def test_hang_up_stops_a_big_file_response(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(1024 * 1024) * 16)  # 16 MiB: 256 chunks of 64 KiB
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/download")
    async def download() -> FileResponse:
        return FileResponse(big)

    result = await HangUpClient(app_with(router)).get("/download", hang_up_after_body_chunks=3)

    assert result.hung_up_at is not None
    assert time.monotonic() - result.hung_up_at < 2.0
    assert result.cancelled
    assert result.sent_after_hang_up == []
    assert not result.complete
    assert len(result.body) == 3 * 64 * 1024  # nothing after the third chunk


# -- After the response, and after the hang-up ----------------------------------------------


@MODES
async def test_background_tasks_run_to_completion_after_a_complete_response(
    disconnect: Mode,
) -> None:
    done: list[str] = []
    router = APIRouter(route_class=CancellableRoute)

    async def send_email(to: str) -> None:
        await anyio.sleep(0.2)  # the disconnect after the response arrives meanwhile
        done.append(to)

    @router.get("/signup")
    async def signup(background_tasks: BackgroundTasks) -> dict[str, str]:
        background_tasks.add_task(send_email, "ann@example.com")
        return {"status": "ok"}

    result = await HangUpClient(app_with(router), disconnect=disconnect).get("/signup")

    assert result.status_code == 200
    assert result.body == b'{"status":"ok"}'
    assert done == ["ann@example.com"]
    assert result.context is not None
    assert not result.context.is_cancelled


async def test_sync_endpoint_that_finishes_after_the_hang_up_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    completed: list[str] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    def work() -> dict[str, str]:
        time.sleep(0.3)  # Python cannot stop a thread: it runs to its end
        completed.append("work")
        return {"late": "answer"}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_after=0.05)

    assert completed == ["work"]
    assert result.cancelled
    assert result.sent_after_hang_up == []
    assert result.messages == []
    assert len(hang_up_records(caplog)) == 1


async def test_shielded_endpoint_that_returns_after_the_hang_up_sends_nothing() -> None:
    written: list[str] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(ctx: CancelCtx) -> dict[str, str]:
        with ctx.shield():
            await anyio.sleep(0.3)
            written.append("row")
        return {"late": "answer"}

    result = await HangUpClient(app_with(router)).get("/work", hang_up_after=0.05)

    assert written == ["row"]
    assert result.cancelled
    assert result.sent_after_hang_up == []


# -- Lossless: the route's watcher never eats a body byte ---------------------------------


class Item(BaseModel):
    name: str
    tags: list[str]


PAUSES = pytest.mark.parametrize("pause", [0.0, 0.05], ids=["reads-at-once", "reads-later"])
CHUNKS = [os.urandom(n) for n in (1, 4096, 0, 70_000, 17, 65_536, 3)]


def body_router() -> APIRouter:
    """POST routes that read the body each way; POST is guarded on this router."""
    router = APIRouter(route_class=cancellable_route(methods=ALL_METHODS))

    @router.post("/body")
    async def whole(request: Request, pause: float = 0.0) -> Response:
        await anyio.sleep(pause)  # meanwhile the watcher holds the first message
        return Response(await request.body(), media_type="application/octet-stream")

    @router.post("/stream")
    async def streamed(request: Request, pause: float = 0.0) -> list[str]:
        await anyio.sleep(pause)
        return [chunk.hex() async for chunk in request.stream()]

    @router.post("/model")
    async def model(item: Item) -> Item:
        return item

    return router


@PAUSES
async def test_request_body_arrives_whole_through_the_route(pause: float) -> None:
    client = HangUpClient(app_with(body_router()), disconnect="once")

    result = await client.post(f"/body?pause={pause}", body=CHUNKS)

    assert result.status_code == 200
    assert result.body == b"".join(CHUNKS)
    assert result.context is not None  # the body went through the guarded route


@PAUSES
async def test_request_stream_yields_every_chunk_once_in_order_through_the_route(
    pause: float,
) -> None:
    client = HangUpClient(app_with(body_router()), disconnect="once")

    result = await client.post(f"/stream?pause={pause}", body=CHUNKS)

    assert result.status_code == 200
    # Starlette skips empty messages and ends every stream with one b"".
    assert json.loads(result.body) == [chunk.hex() for chunk in CHUNKS if chunk] + [""]
    assert result.context is not None


async def test_pydantic_body_parameter_parses_a_multi_chunk_body_through_the_route() -> None:
    payload = json.dumps({"name": "pen" * 1000, "tags": ["a", "b"]}).encode()
    chunks = [payload[i : i + 500] for i in range(0, len(payload), 500)]
    client = HangUpClient(app_with(body_router()), disconnect="once")

    result = await client.post("/model", body=chunks, headers={"content-type": "application/json"})

    assert result.status_code == 200
    assert json.loads(result.body) == json.loads(payload)
    assert result.context is not None


async def test_starlettes_own_disconnect_listener_still_ends_a_stream() -> None:
    # With a grace period the context does not cancel the stream for 5 s: only Starlette's
    # listener can end it sooner, and with disconnect="once" it can only see the
    # disconnect if the route replays it to every reader.
    produced: list[int] = []
    router = APIRouter(route_class=cancellable_route(grace=5))

    @router.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for n in range(1000):
                produced.append(n)
                yield b"chunk\n"
                await anyio.sleep(0.01)

        return StreamingResponse(chunks(), media_type="text/plain")

    client = HangUpClient(app_with(router), disconnect="once")
    with abandoned_generators_tolerated():
        result = await client.get("/stream", hang_up_after_body_chunks=3)

    assert result.context is not None
    assert result.context.is_cancelled  # noticed at once, delivered only after the grace
    assert result.sent_after_hang_up == []
    await assert_stopped_producing(produced, result)


# -- One request, one context -----------------------------------------------------------------


async def test_ctx_dependency_on_the_route_class_is_the_routes_context() -> None:
    started = anyio.Event()
    seen: list[CancelOnDisconnect] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(ctx: CancelCtx) -> dict[str, str]:
        seen.append(ctx)
        started.set()
        await anyio.sleep(5)
        return {}

    counter = ContextCounter(app_with(router))
    result = await HangUpClient(counter).get("/work", hang_up_on=started)

    assert counter.contexts == [seen[0]]  # one context, so one watcher
    assert result.context is seen[0]
    assert seen[0].is_cancelled


async def test_one_raw_receive_reader_with_the_route_class_and_a_ctx_dependency() -> None:
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/work")
    async def work(ctx: CancelCtx) -> dict[str, str]:
        await anyio.sleep(0.05)  # the watcher is armed meanwhile
        return {}

    receive = ScriptedReceive([BODY_END])
    send = RecordingSend()
    await app_with(router)(http_scope("GET", "/work"), receive, send)

    assert send.status == 200
    assert receive.max_waiting == 1


# -- Where the route class is used ------------------------------------------------------------


def policy_router() -> APIRouter:
    router = APIRouter(route_class=CancellableRoute)

    @router.api_route("/work", methods=["GET", "POST"])
    async def work() -> None:
        await anyio.sleep(0.3)

    return router


def included_with_prefix() -> FastAPI:
    app = FastAPI()
    app.include_router(policy_router(), prefix="/v1")
    return app


def included_twice_nested() -> FastAPI:
    outer = APIRouter(prefix="/api")
    outer.include_router(policy_router(), prefix="/v1")
    app = FastAPI()
    app.include_router(outer)
    return app


@pytest.mark.parametrize(
    ("build", "path"),
    [(included_with_prefix, "/v1/work"), (included_twice_nested, "/api/v1/work")],
    ids=["prefix", "nested"],
)
@pytest.mark.parametrize(("method", "cancelled"), [("GET", True), ("POST", False)])
async def test_included_router_keeps_the_policy(
    build: Callable[[], FastAPI], path: str, method: str, cancelled: bool
) -> None:
    result = await HangUpClient(build()).request(method, path, hang_up_after=0.05)

    assert result.hung_up
    assert result.cancelled is cancelled
    assert result.complete is not cancelled


async def test_route_class_set_on_the_apps_own_router_covers_its_routes() -> None:
    app = FastAPI()
    app.router.route_class = CancellableRoute
    started = anyio.Event()

    @app.get("/work")
    async def work() -> dict[str, str]:
        started.set()
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(app).get("/work", hang_up_on=started)

    assert result.cancelled
    assert result.messages == []


# -- Deadlines: the router's, or the route's own through @cancellable ---------------------------


async def test_router_deadline_answers_504_when_the_work_takes_too_long() -> None:
    router = APIRouter(route_class=cancellable_route(deadline=0.05))

    @router.get("/work")
    async def work() -> dict[str, str]:
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(app_with(router)).get("/work")

    assert result.status_code == 504
    assert json.loads(result.body)["detail"].startswith("Deadline exceeded")
    assert result.elapsed < 3


async def test_decorator_deadline_overrides_the_routers_settings() -> None:
    router = APIRouter(route_class=CancellableRoute)  # no deadline of its own

    @router.get("/work")
    @cancellable(deadline=0.05)
    async def work() -> dict[str, str]:
        await anyio.sleep(5)
        return {}

    result = await HangUpClient(app_with(router)).get("/work")

    assert result.status_code == 504
    assert result.elapsed < 3


# -- Transparent when nothing goes wrong --------------------------------------------------------


class Teapot(Exception):
    pass


class Public(BaseModel):
    name: str


def twin_app(route_class: type[CancellableRoute] | None) -> FastAPI:
    """The same routes, on the route class (every method guarded) or on a plain router."""
    router = APIRouter() if route_class is None else APIRouter(route_class=route_class)

    @router.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, detail="no such thing", headers={"x-why": "test"})

    @router.get("/items/{item_id}")
    async def item(item_id: int, limit: int = 10) -> dict[str, int]:
        return {"item_id": item_id, "limit": limit}

    @router.get("/teapot")
    async def teapot() -> None:
        raise Teapot()

    @router.get("/public", response_model=Public)
    async def public() -> dict[str, str]:
        return {"name": "ann", "password": "secret"}

    @router.post("/created", status_code=201)
    async def created(response: Response, item: Public) -> Public:
        response.headers["x-created"] = item.name
        return item

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    app = FastAPI()

    @app.exception_handler(Teapot)
    async def on_teapot(request: Request, exc: Teapot) -> JSONResponse:
        return JSONResponse({"detail": "I'm a teapot"}, status_code=418)

    app.include_router(router)
    return app


GUARDED = cancellable_route(methods=ALL_METHODS)


@pytest.mark.parametrize(
    ("method", "url", "body", "status"),
    [
        pytest.param("GET", "/missing", b"", 404, id="http-exception"),
        pytest.param("GET", "/items/7?limit=2", b"", 200, id="ok"),
        pytest.param("GET", "/items/seven", b"", 422, id="path-validation"),
        pytest.param("GET", "/items/7?limit=x", b"", 422, id="query-validation"),
        pytest.param("GET", "/teapot", b"", 418, id="custom-handler"),
        pytest.param("GET", "/public", b"", 200, id="response-model"),
        pytest.param("POST", "/created", b'{"name":"ann"}', 201, id="status-and-header"),
        pytest.param("POST", "/created", b'{"nom":"ann"}', 422, id="body-validation"),
        pytest.param("GET", "/nowhere", b"", 404, id="no-route"),
    ],
)
async def test_route_class_answers_exactly_as_a_plain_router(
    method: str, url: str, body: bytes, status: int
) -> None:
    headers = {"content-type": "application/json"}

    guarded = await HangUpClient(twin_app(GUARDED)).request(method, url, body=body, headers=headers)
    plain = await HangUpClient(twin_app(None)).request(method, url, body=body, headers=headers)

    assert guarded.status_code == status
    assert (guarded.status_code, guarded.headers, guarded.body) == (
        plain.status_code,
        plain.headers,
        plain.body,
    )


async def test_route_class_guards_the_transparency_twin() -> None:
    result = await HangUpClient(twin_app(GUARDED)).get("/missing")

    assert result.context is not None  # the twin comparison really went through a guard
    assert not result.context.is_cancelled


@pytest.mark.parametrize("route_class", [GUARDED, None], ids=["route-class", "plain"])
async def test_unhandled_error_escapes_as_itself_not_as_an_exception_group(
    route_class: type[CancellableRoute] | None,
) -> None:
    send = RecordingSend()

    with pytest.raises(RuntimeError, match="boom"):
        await twin_app(route_class)(http_scope("GET", "/boom"), ScriptedReceive([BODY_END]), send)

    assert send.status == 500


async def test_client_closing_after_the_last_content_length_byte_is_no_hang_up() -> None:
    ran: list[str] = []
    router = APIRouter(route_class=CancellableRoute)

    @router.get("/sized")
    async def sized(tasks: BackgroundTasks) -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"
            await anyio.sleep(0.05)  # the final, empty message comes a moment later

        tasks.add_task(lambda: ran.append("background"))
        return StreamingResponse(chunks(), headers={"content-length": "6"}, background=tasks)

    app = FastAPI()
    app.include_router(router)
    result = await HangUpClient(app).get("/sized", hang_up_after_body_chunks=2)

    assert result.body == b"abcdef"
    assert not result.cancelled
    assert ran == ["background"]
