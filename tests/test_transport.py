"""HangUpTransport: an httpx client that gives up on a request hangs up on the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup import CancelCause, CancelCtx, CancellableRoute
from fastapi_hangup.testing import (
    HangUpTransport,
    LifespanFailed,
    assert_cancelled,
    assert_not_cancelled,
)

pytestmark = pytest.mark.anyio

produced: list[int] = []


def guarded_app() -> FastAPI:
    app = FastAPI()
    streams = APIRouter(route_class=CancellableRoute)

    @app.get("/slow")
    async def slow(ctx: CancelCtx, seconds: float = 30) -> dict[str, bool]:
        await anyio.sleep(seconds)
        return {"ok": True}

    @streams.get("/lines")
    async def lines() -> StreamingResponse:
        async def generate() -> AsyncIterator[bytes]:
            for n in range(1000):
                produced.append(n)
                yield f"{n}\n".encode()
                await anyio.sleep(0.01)

        return StreamingResponse(generate(), media_type="text/plain")

    app.include_router(streams)
    return app


@asynccontextmanager
async def client_for(app: ASGIApp, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = HangUpTransport(app, **options)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def transport_of(client: httpx.AsyncClient) -> HangUpTransport:
    transport = client._transport
    assert isinstance(transport, HangUpTransport)
    return transport


async def test_a_timeout_around_the_call_hangs_up_and_the_outcome_is_ready() -> None:
    async with client_for(guarded_app()) as client:
        with pytest.raises(TimeoutError), anyio.fail_after(0.05):
            await client.get("/slow")
        result = transport_of(client).last_request
    assert result.hung_up
    assert result.finished  # the abandoning call waited for the app to end
    assert_cancelled(result)
    (record,) = result.log_records
    assert (record.status_code, record.cause) == (499, "client_disconnected")  # type: ignore[attr-defined]


async def test_leaving_a_stream_early_hangs_up() -> None:
    produced.clear()
    lines: list[str] = []
    async with client_for(guarded_app()) as client:
        async with client.stream("GET", "/lines") as response:
            # Not `break`: on trio that leaves httpx's generators to the GC, which warns.
            with anyio.move_on_after(0.05):
                async for line in response.aiter_lines():
                    lines.append(line)
        result = transport_of(client).last_request
    assert_cancelled(result)
    assert lines[:2] == ["0", "1"]
    assert len(produced) < 100  # the generator stopped, far from its 1000 lines


async def test_reading_a_stream_to_its_end_is_no_hang_up() -> None:
    async def three_chunks(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for chunk in (b"a", b"b", b"c"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async with client_for(three_chunks, lifespan=False) as client:
        async with client.stream("GET", "/") as response:
            chunks = [chunk async for chunk in response.aiter_raw()]
        result = transport_of(client).last_request
    assert chunks == [b"a", b"b", b"c"]  # as the app sent them, not joined
    assert not result.hung_up


async def receives_after_hang_up(disconnect: str) -> list[str]:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append((await receive())["type"])  # the body
        seen.append((await receive())["type"])  # the disconnect
        with anyio.move_on_after(0.1):
            seen.append((await receive())["type"])  # "repeat" answers again, "once" blocks

    async with client_for(app, lifespan=False, disconnect=disconnect) as client:
        with anyio.move_on_after(0.01):
            await client.get("/")
    return seen


async def test_once_mode_delivers_the_disconnect_a_single_time() -> None:
    assert await receives_after_hang_up("once") == ["http.request", "http.disconnect"]


async def test_repeat_mode_delivers_the_disconnect_to_every_call() -> None:
    seen = await receives_after_hang_up("repeat")
    assert seen == ["http.request", "http.disconnect", "http.disconnect"]


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/echo", methods=["GET", "POST", "HEAD"])
    async def echo(request: Request) -> Response:
        body = await request.body()
        return Response(
            content=repr(
                (body, sorted(request.query_params.items()), request.cookies, request.url.path)
            ),
            headers={"x-seen": request.headers.get("x-sent", "")},
        )

    return app


async def chunked_body() -> AsyncIterator[bytes]:
    for chunk in (b"one ", b"two ", b"three"):
        yield chunk


REQUESTS: list[Any] = [
    pytest.param({"json": {"a": [1, 2]}}, id="json"),
    pytest.param({"params": {"q": "x y", "n": 3}}, id="params"),
    pytest.param({"headers": {"x-sent": "yes"}, "cookies": {"session": "s1"}}, id="cookies"),
    pytest.param({"content": b"raw bytes"}, id="bytes"),
    pytest.param({"content": "streamed"}, id="stream"),
    pytest.param({"method": "HEAD"}, id="head"),
]


@pytest.mark.parametrize("request_kwargs", REQUESTS)
async def test_an_ordinary_request_is_answered_as_by_asgi_transport(
    request_kwargs: dict[str, Any],
) -> None:
    kwargs = dict(request_kwargs)
    method = kwargs.pop("method", "POST")
    cookies = kwargs.pop("cookies", None)
    if kwargs.get("content") == "streamed":
        kwargs["content"] = chunked_body()
    answers = []
    for transport in (httpx.ASGITransport(app=echo_app()), HangUpTransport(echo_app())):
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", cookies=cookies
        ) as client:
            if kwargs.get("content") is not None and not isinstance(kwargs["content"], bytes):
                kwargs["content"] = chunked_body()  # a generator is read once
            response = await client.request(method, "/echo", **kwargs)
            answers.append((response.status_code, response.headers.multi_items(), response.content))
    assert answers[0] == answers[1]
    assert answers[1][0] == 200


async def test_an_app_exception_propagates_from_the_call() -> None:
    app = FastAPI()

    @app.get("/broken")
    async def broken() -> None:
        raise KeyError("boom")

    async with client_for(app) as client:
        with pytest.raises(KeyError):
            await client.get("/broken")


async def test_without_raising_an_app_exception_is_a_500() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("boom")

    async with client_for(broken, lifespan=False, raise_app_exceptions=False) as client:
        response = await client.get("/")
    assert response.status_code == 500


async def test_an_exception_after_the_response_started_propagates_from_the_body() -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise KeyError("boom")

    async with client_for(half, lifespan=False) as client:
        with pytest.raises(KeyError):
            await client.get("/")


async def test_the_lifespan_runs_around_the_client_and_its_state_reaches_requests() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"pool": "open"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/pool")
    async def pool(request: Request) -> str:
        return str(request.state.pool)

    async with client_for(app) as client:
        assert events == ["startup"]
        response = await client.get("/pool")
    assert response.json() == "open"
    assert events == ["startup", "shutdown"]


async def test_a_failing_startup_fails_the_client() -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise LookupError("no database")
        yield  # pragma: no cover

    with pytest.raises(LookupError, match="no database"):
        async with client_for(FastAPI(lifespan=lifespan)):
            pass  # pragma: no cover


async def test_a_startup_reported_failed_names_the_message() -> None:
    async def refuses(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    with pytest.raises(LifespanFailed, match="no database"):
        async with client_for(refuses):
            pass  # pragma: no cover


async def test_a_hang_up_behind_an_http_middleware_is_a_clean_cancellation() -> None:
    app = guarded_app()

    @app.middleware("http")
    async def stamp(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["x-stamp"] = "1"
        return response

    async with client_for(app) as client:
        with anyio.move_on_after(0.05):
            await client.get("/slow")
        abandoned = transport_of(client).last_request
        answered = await client.get("/slow?seconds=0")
    assert_cancelled(abandoned)
    assert answered.headers["x-stamp"] == "1"
    assert_not_cancelled(transport_of(client).last_request)


async def test_an_app_that_ignores_the_hang_up_is_cancelled_when_the_client_closes() -> None:
    async def stubborn(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.sleep(30)  # never reads the disconnect

    async with client_for(stubborn, lifespan=False, hang_up_wait=0.01) as client:
        with anyio.move_on_after(0.01):
            await client.get("/")
        result = transport_of(client).last_request
        assert not result.finished  # the wait for it is bounded
    assert result.finished


async def test_log_records_go_to_their_own_request_and_nowhere_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for(guarded_app()) as client, anyio.create_task_group() as tg:
        for seconds in ("30", "31"):
            tg.start_soon(give_up_on, client, f"/slow?seconds={seconds}")
    first, second = transport_of(client).requests
    assert [len(first.log_records), len(second.log_records)] == [1, 1]
    assert caplog.records == []  # INFO is off: nobody else sees the record
    assert logging.getLogger("fastapi_hangup").level == logging.NOTSET


async def give_up_on(client: httpx.AsyncClient, url: str) -> None:
    with anyio.move_on_after(0.05):
        await client.get(url)


async def test_requests_need_an_entered_client() -> None:
    client = httpx.AsyncClient(transport=HangUpTransport(guarded_app()), base_url="http://t")
    with pytest.raises(RuntimeError, match=r"async with httpx\.AsyncClient"):
        await client.get("/slow")


async def test_last_request_says_when_there_is_none() -> None:
    with pytest.raises(LookupError, match="no request"):
        _ = HangUpTransport(guarded_app()).last_request


async def test_a_deadline_ends_in_a_504_with_its_cause() -> None:
    from fastapi_hangup import cancellable

    app = FastAPI()

    @app.get("/late")
    @cancellable(deadline=0.05)
    async def late() -> None:
        await anyio.sleep(30)

    async with client_for(app) as client:
        response = await client.get("/late")
        assert_cancelled(transport_of(client).last_request, CancelCause.DEADLINE_EXCEEDED)
    assert response.status_code == 504
