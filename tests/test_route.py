"""What is specific to ``CancellableRoute``: the method policy, and the whole request covered
(dependencies before the endpoint, streaming bodies, the end of the response).

The promises every entry point keeps (hang-up, transparency, lossless bodies, ...) are tested
once for all four in the feature files, through the ``entry`` fixture.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
dependencies do not live.
"""

import json
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
    Request,
)
from fastapi.responses import FileResponse, StreamingResponse

from fastapi_hangup import (
    ALL_METHODS,
    CancellableRoute,
    cancellable,
    cancellable_route,
)
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._route_kit import abandoned_generators_tolerated

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
#: A read and a write per (router, mark): enough to see each policy work in a request.
REQUESTS = [param for param in MATRIX if param.values[2] in {"GET", "POST"}]


def work_router(router_name: str, mark: str, completed: list[str]) -> APIRouter:
    router = APIRouter(route_class=ROUTERS[router_name])

    async def work(request: Request) -> None:
        await anyio.sleep(0.3)
        completed.append(request.method)

    router.api_route("/work", methods=list(METHODS))(MARKS[mark](work))
    return router


@pytest.mark.parametrize(("router_name", "mark", "method", "cancelled"), MATRIX)
def test_policy_decides_which_methods_are_guarded(
    router_name: str, mark: str, method: str, cancelled: bool
) -> None:
    (route,) = work_router(router_name, mark, []).routes
    assert isinstance(route, CancellableRoute)

    assert (method in route.cancelled_methods) is cancelled


@pytest.mark.parametrize(("router_name", "mark", "method", "cancelled"), REQUESTS)
async def test_policy_decides_whether_a_hang_up_cancels(
    router_name: str, mark: str, method: str, cancelled: bool
) -> None:
    completed: list[str] = []
    app = app_with(work_router(router_name, mark, completed))

    result = await HangUpClient(app).request(method, "/work", hang_up_after=0.05)

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


# -- Starlette's own disconnect listener still works ----------------------------------------


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


# -- The end of the response, told from what the route sends -------------------------------


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
