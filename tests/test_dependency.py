"""``Depends(cancel_ctx)``, promise by promise (``../shared/DESIGN.md``), in memory.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
dependencies do not live.
"""

import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
from fastapi import (
    BackgroundTasks,
    Depends,
    FastAPI,
    HTTPException,
    Request,
    Response,
    WebSocket,
)
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fastapi_hangup import (
    ALL_METHODS,
    CancelCtx,
    CancelOnDisconnect,
    ClientDisconnected,
    cancel_ctx,
    cancellable_route,
)
from fastapi_hangup.testing import HangUpClient, RequestResult
from tests._asgi import RecordingSend, ScriptedReceive, body_messages, http_scope, running_tasks

pytestmark = pytest.mark.anyio

FunctionScopedCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx, scope="function")]
UncachedCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx, use_cache=False)]
Work = Callable[[CancelOnDisconnect], Awaitable[object]]
Mode = Literal["once", "repeat"]

DECLARATIONS = pytest.mark.parametrize("declared", ["plain", "function-scope", "alias"])
MODES = pytest.mark.parametrize("disconnect", ["once", "repeat"])


def guarded_app(work: Work) -> FastAPI:
    """An app with one route per way to declare the dependency, each doing ``work(ctx)``."""
    app = FastAPI()

    @app.get("/plain/{item_id}", response_model=None)
    async def plain(
        item_id: int,
        ctx: CancelOnDisconnect = Depends(cancel_ctx),  # noqa: B008 - the form users write
    ) -> object:
        return await work(ctx)

    @app.get("/function-scope/{item_id}", response_model=None)
    async def function_scope(item_id: int, ctx: FunctionScopedCtx) -> object:
        return await work(ctx)

    @app.get("/alias/{item_id}", response_model=None)
    async def alias(item_id: int, ctx: CancelCtx) -> object:
        return await work(ctx)

    return app


def hang_up_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fastapi_hangup"]


async def eventually(predicate: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll ``predicate`` on the event loop until it holds or ``within`` seconds pass."""
    for _ in range(math.ceil(within / 0.01)):
        if predicate():
            return True
        await anyio.sleep(0.01)
    return predicate()


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` consecutive non-empty pieces (fewer if it is shorter)."""
    size = max(1, math.ceil(len(data) / parts))
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- Prompt and clean: a hang-up mid-work --------------------------------------------------


@DECLARATIONS
@MODES
async def test_hang_up_mid_work_cancels_at_the_next_await_and_runs_finally(
    declared: str, disconnect: Mode
) -> None:
    started = anyio.Event()
    steps: list[str] = []
    cancelled_at: list[float] = []

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        try:
            await anyio.sleep(5)
            steps.append("after the await")
        finally:
            cancelled_at.append(time.monotonic())
            steps.append(f"finally, is_cancelled={ctx.is_cancelled}")
        return {}

    client = HangUpClient(guarded_app(work), disconnect=disconnect)
    result = await client.get(f"/{declared}/7", hang_up_on=started)

    assert steps == ["finally, is_cancelled=True"]
    assert result.hung_up
    assert result.cancelled
    assert result.hung_up_at is not None
    assert cancelled_at[0] - result.hung_up_at < 1.0  # milliseconds in practice


@DECLARATIONS
async def test_hang_up_ends_the_request_quietly_sending_nothing(declared: str) -> None:
    started = anyio.Event()

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        await anyio.sleep(5)
        return {}

    # An exception escaping the app would propagate out of get() (a cancellation exception
    # is turned into an AssertionError by the client).
    result = await HangUpClient(guarded_app(work)).get(f"/{declared}/7", hang_up_on=started)

    assert result.messages == []
    assert result.sent_after_hang_up == []
    assert result.elapsed < 3.0


@DECLARATIONS
async def test_hang_up_logs_one_499_record_with_method_and_route(
    declared: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()

    async def work(ctx: CancelOnDisconnect) -> object:
        started.set()
        await anyio.sleep(5)
        return {}

    await HangUpClient(guarded_app(work)).get(f"/{declared}/7", hang_up_on=started)

    (record,) = hang_up_records(caplog)
    assert record.levelno == logging.INFO
    assert f"GET /{declared}/{{item_id}} 499 Client Closed Request" in record.getMessage()
    assert record.__dict__["status_code"] == 499
    assert record.__dict__["method"] == "GET"
    assert record.__dict__["route"] == f"/{declared}/{{item_id}}"
    assert record.__dict__["duration_ms"] >= 0


async def test_hang_up_while_a_later_dependency_awaits_cancels_it_quietly() -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def fetch_user(ctx: CancelCtx) -> str:
        started.set()
        try:
            await anyio.sleep(5)  # the auth service round trip
        finally:
            steps.append(f"dependency stopped, is_cancelled={ctx.is_cancelled}")
        return "user"

    app = FastAPI()

    @app.get("/me")
    async def me(user: Annotated[str, Depends(fetch_user)]) -> str:
        steps.append("endpoint ran")
        return user

    result = await HangUpClient(app).get("/me", hang_up_on=started)

    assert steps == ["dependency stopped, is_cancelled=True"]
    assert result.messages == []


async def test_a_users_own_client_disconnected_handler_is_kept() -> None:
    started = anyio.Event()
    handled: list[ClientDisconnected] = []
    app = FastAPI()

    @app.exception_handler(ClientDisconnected)
    async def count_hang_ups(request: Request, exc: ClientDisconnected) -> None:
        handled.append(exc)

    @app.get("/slow")
    async def slow(ctx: CancelCtx) -> None:
        started.set()
        await anyio.sleep(5)

    result = await HangUpClient(app).get("/slow", hang_up_on=started)

    assert len(handled) == 1
    assert isinstance(handled[0], ClientDisconnected)
    assert result.messages == []


async def test_hang_up_under_an_http_middleware_ends_quietly() -> None:
    started = anyio.Event()
    app = FastAPI()

    @app.middleware("http")
    async def passthrough(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        return await call_next(request)

    @app.get("/slow")
    async def slow(ctx: CancelCtx) -> None:
        started.set()
        await anyio.sleep(5)

    pending = body_messages([])
    delivered_disconnect = False

    async def receive() -> Message:  # hangs up once the endpoint has started
        nonlocal delivered_disconnect
        if pending:
            return pending.pop(0)
        await started.wait()
        if delivered_disconnect:
            await anyio.sleep_forever()
        delivered_disconnect = True
        return {"type": "http.disconnect"}

    send = RecordingSend()
    with anyio.fail_after(5):
        await app(http_scope("GET", "/slow"), receive, send)  # must not raise

    # call_next() needs a response, so the middleware gets an empty 499 nobody reads.
    starts = [m for m in send.messages if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [499]


# -- Client left != stream ended: a disconnect after the complete response -----------------


@MODES
async def test_background_tasks_run_to_completion_after_the_response(disconnect: Mode) -> None:
    ran: list[str] = []
    app = FastAPI()

    async def send_receipt(ctx: CancelOnDisconnect) -> None:
        for step in range(3):
            await anyio.sleep(0.01)
            ran.append(f"step {step}")
        ran.append(f"done, is_cancelled={ctx.is_cancelled}")

    @app.get("/order")
    async def order(ctx: CancelCtx, tasks: BackgroundTasks) -> dict[str, bool]:
        await anyio.lowlevel.checkpoint()  # the watcher is armed: it would see the disconnect
        tasks.add_task(send_receipt, ctx)
        return {"ok": True}

    result = await HangUpClient(app, disconnect=disconnect).get("/order")

    assert result.complete
    assert ran == ["step 0", "step 1", "step 2", "done, is_cancelled=False"]


@MODES
async def test_disconnect_after_the_complete_response_is_no_hang_up(
    disconnect: Mode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    app = FastAPI()

    @app.get("/fast")
    async def fast(ctx: CancelCtx, tasks: BackgroundTasks) -> dict[str, bool]:
        await anyio.lowlevel.checkpoint()
        tasks.add_task(anyio.sleep, 0.05)  # the disconnect arrives while this runs
        return {"ok": True}

    result = await HangUpClient(app, disconnect=disconnect).get("/fast")

    assert result.status_code == 200
    assert result.body == b'{"ok":true}'
    assert result.context is not None
    assert not result.context.is_cancelled
    assert hang_up_records(caplog) == []


# -- Lossless: every body byte reaches whoever reads the request ---------------------------

PAYLOAD = json.dumps({"rows": [f"row-{i:04d}" for i in range(300)]}).encode()


async def read_body(request: Request, how: str) -> list[bytes]:
    """Read the request body the way ``how`` says; return what arrived, chunk by chunk."""
    if how == "body":
        return [await request.body()]
    if how == "json":
        return [json.dumps(await request.json()).encode()]
    return [chunk async for chunk in request.stream() if chunk]


def reading_app(how: str, got: list[bytes], *, settle_first: bool) -> FastAPI:
    app = FastAPI()

    @app.api_route("/read", methods=["GET", "POST"])
    async def read(request: Request, ctx: CancelCtx) -> dict[str, bool]:
        if settle_first:  # the watcher is running and holds the first message
            await anyio.wait_all_tasks_blocked()
        got.extend(await read_body(request, how))
        return {"ok": True}

    return app


@pytest.mark.parametrize("how", ["body", "stream", "json"])
@pytest.mark.parametrize("parts", [1, 64], ids=["one-chunk", "64-chunks"])
@pytest.mark.parametrize("settle_first", [False, True], ids=["read-at-once", "read-later"])
@MODES
async def test_guarded_endpoint_reads_every_body_byte_in_order(
    how: str, parts: int, settle_first: bool, disconnect: Mode
) -> None:
    chunks = split(PAYLOAD, parts)
    got: list[bytes] = []
    app = reading_app(how, got, settle_first=settle_first)

    result = await HangUpClient(app, disconnect=disconnect).post("/read", body=chunks)

    assert result.status_code == 200
    assert len(chunks) == parts
    if how == "stream":
        assert got == chunks  # each message once, in order, chunk boundaries kept
    elif how == "json":
        assert json.loads(b"".join(got)) == json.loads(PAYLOAD)
    else:
        assert got == [PAYLOAD]


@pytest.mark.parametrize("how", ["body", "stream"])
@pytest.mark.parametrize("settle_first", [False, True], ids=["read-at-once", "read-later"])
@MODES
async def test_get_with_an_empty_body_reads_nothing_and_does_not_hang(
    how: str, settle_first: bool, disconnect: Mode
) -> None:
    got: list[bytes] = []
    app = reading_app(how, got, settle_first=settle_first)

    result = await HangUpClient(app, disconnect=disconnect, timeout=5).get("/read")

    assert result.status_code == 200
    assert b"".join(got) == b""


def form_app(fields: dict[str, str], uploads: dict[str, bytes]) -> FastAPI:
    app = FastAPI()

    @app.post("/form")
    async def form(request: Request, ctx: CancelCtx) -> dict[str, bool]:
        await anyio.wait_all_tasks_blocked()
        async with request.form() as data:
            for key, value in data.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                else:
                    assert isinstance(value, UploadFile)
                    uploads[key] = await value.read()
        return {"ok": True}

    return app


@pytest.mark.parametrize("parts", [1, 64], ids=["one-chunk", "64-chunks"])
@MODES
async def test_guarded_endpoint_reads_an_urlencoded_form(parts: int, disconnect: Mode) -> None:
    # Starlette parses even urlencoded forms with python-multipart.
    pytest.importorskip("python_multipart")
    sent = {f"field{i}": f"value {i}" for i in range(64)}
    body = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in sent.items()).encode()
    fields: dict[str, str] = {}
    app = form_app(fields, {})

    result = await HangUpClient(app, disconnect=disconnect).post(
        "/form",
        body=split(body, parts),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert result.status_code == 200
    assert fields == sent


@pytest.mark.parametrize("parts", [1, 64], ids=["one-chunk", "64-chunks"])
@MODES
async def test_guarded_endpoint_reads_a_multipart_form(parts: int, disconnect: Mode) -> None:
    pytest.importorskip("python_multipart")
    boundary = "hangup-boundary"
    upload = bytes(range(256)) * 16
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n'.encode(),
            b"report\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; "
            'name="upload"; filename="data.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            upload,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    fields: dict[str, str] = {}
    uploads: dict[str, bytes] = {}
    app = form_app(fields, uploads)

    result = await HangUpClient(app, disconnect=disconnect).post(
        "/form",
        body=split(body, parts),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert result.status_code == 200
    assert fields == {"title": "report"}
    assert uploads == {"upload": upload}


class Order(BaseModel):
    item: str
    notes: list[str]


@MODES
async def test_body_parameter_and_context_together_parse_the_whole_body(disconnect: Mode) -> None:
    app = FastAPI()

    @app.post("/orders")
    async def create(order: Order, ctx: CancelCtx) -> Order:
        await anyio.lowlevel.checkpoint()
        return order

    order = Order(item="book", notes=[f"note {i}" for i in range(100)])
    result = await HangUpClient(app, disconnect=disconnect).post(
        "/orders",
        body=split(order.model_dump_json().encode(), 64),
        headers={"content-type": "application/json"},
    )

    assert result.status_code == 200
    assert Order.model_validate_json(result.body) == order


@MODES
async def test_hang_up_after_a_body_parameter_consumed_the_body_is_noticed(
    disconnect: Mode,
) -> None:
    started = anyio.Event()
    app = FastAPI()

    @app.post("/orders")
    async def create(order: Order, ctx: CancelCtx) -> Order:
        started.set()
        await anyio.sleep(5)
        return order

    result = await HangUpClient(app, disconnect=disconnect).post(
        "/orders",
        body=split(Order(item="book", notes=[]).model_dump_json().encode(), 8),
        headers={"content-type": "application/json"},
        hang_up_on=started,
    )

    assert result.cancelled
    assert result.messages == []


@MODES
async def test_is_disconnected_does_not_swallow_body_bytes(disconnect: Mode) -> None:
    chunks = split(PAYLOAD, 64)
    answers: list[bool] = []
    got: list[bytes] = []
    app = FastAPI()

    @app.post("/read")
    async def read(request: Request, ctx: CancelCtx) -> dict[str, bool]:
        answers.append(await request.is_disconnected())  # before the watcher runs
        await anyio.wait_all_tasks_blocked()
        answers.append(await request.is_disconnected())  # while it holds the first chunk
        async for chunk in request.stream():
            got.append(chunk)
            answers.append(await request.is_disconnected())
        return {"ok": True}

    result = await HangUpClient(app, disconnect=disconnect).post("/read", body=chunks)

    assert result.status_code == 200
    assert [chunk for chunk in got if chunk] == chunks
    assert not any(answers)


@pytest.mark.parametrize(
    "read_body_first",
    [True, False],
    ids=["body-read", "body-unread"],
)
@MODES
async def test_is_disconnected_is_true_after_a_hang_up_inside_a_shield(
    read_body_first: bool, disconnect: Mode
) -> None:
    started = anyio.Event()
    answers: list[bool] = []
    app = FastAPI()

    @app.api_route("/probe", methods=["GET", "POST"])
    async def probe(request: Request, ctx: CancelCtx) -> None:
        if read_body_first:
            await request.body()
        with ctx.shield():
            answers.append(await request.is_disconnected())
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
            answers.append(await request.is_disconnected())
        await anyio.sleep(5)

    client = HangUpClient(app, disconnect=disconnect)
    if read_body_first:
        result = await client.post("/probe", body=b"payload", hang_up_on=started)
    else:  # a GET: its only message, an empty body, is never read
        result = await client.get("/probe", hang_up_on=started)

    assert result.cancelled
    assert answers == [False, True]


# -- Transparent when nothing goes wrong ---------------------------------------------------


class Public(BaseModel):
    name: str


class TeapotError(Exception):
    pass


def shop_app(*, guarded: bool) -> FastAPI:
    """The same routes with and without the dependency on every one of them."""
    app = FastAPI(dependencies=[Depends(cancel_ctx)] if guarded else [])

    @app.exception_handler(TeapotError)
    async def on_teapot(request: Request, exc: TeapotError) -> JSONResponse:
        return JSONResponse({"mine": str(exc)}, status_code=409, headers={"X-Handler": "teapot"})

    @app.get("/http-error")
    async def http_error() -> None:
        await anyio.lowlevel.checkpoint()
        raise HTTPException(status_code=418, detail={"why": "teapot"}, headers={"X-Why": "tea"})

    @app.get("/typed/{number}")
    async def typed(number: int) -> dict[str, int]:
        await anyio.lowlevel.checkpoint()
        return {"number": number}

    @app.post("/public")
    async def create(item: Public) -> Public:
        await anyio.lowlevel.checkpoint()
        return item

    @app.get("/custom-error")
    async def custom_error() -> None:
        await anyio.lowlevel.checkpoint()
        raise TeapotError("short and stout")

    @app.get("/filtered", response_model=Public)
    async def filtered() -> dict[str, str]:
        await anyio.lowlevel.checkpoint()
        return {"name": "visible", "secret": "hidden"}

    @app.post("/created", status_code=201)
    async def created(response: Response) -> dict[str, bool]:
        await anyio.lowlevel.checkpoint()
        response.headers["X-Extra"] = "yes"
        return {"created": True}

    @app.delete("/gone", status_code=204)
    async def gone() -> None:
        await anyio.lowlevel.checkpoint()

    return app


JSON = {"content-type": "application/json"}
SHOP_REQUESTS = [
    pytest.param("GET", "/http-error", b"", {}, 418, id="http-exception"),
    pytest.param("GET", "/typed/abc", b"", {}, 422, id="path-validation-error"),
    pytest.param("POST", "/public", b'{"name": 1}', JSON, 422, id="body-validation-error"),
    # FastAPI parses the body before it solves dependencies: cancel_ctx never runs here.
    pytest.param("POST", "/public", b'{"name":', JSON, 422, id="invalid-json"),
    pytest.param("GET", "/custom-error", b"", {}, 409, id="custom-exception-handler"),
    pytest.param("GET", "/filtered", b"", {}, 200, id="response-model-filtering"),
    pytest.param("POST", "/created", b"{}", JSON, 201, id="custom-status-and-header"),
    pytest.param("DELETE", "/gone", b"", {}, 204, id="no-content"),
    pytest.param("GET", "/typed/5", b"", {}, 200, id="plain-success"),
]


@pytest.mark.parametrize(("method", "url", "body", "headers", "status"), SHOP_REQUESTS)
async def test_response_is_identical_with_and_without_the_dependency(
    method: str, url: str, body: bytes, headers: dict[str, str], status: int
) -> None:
    results: list[RequestResult] = []
    for guarded in (False, True):
        client = HangUpClient(shop_app(guarded=guarded))
        results.append(await client.request(method, url, body=body, headers=headers))
    plain, guarded_result = results

    assert plain.status_code == status
    assert guarded_result.messages == plain.messages
    assert not guarded_result.cancelled


async def test_dependency_runs_for_requests_that_fail_validation() -> None:
    result = await HangUpClient(shop_app(guarded=True)).get("/typed/abc")

    assert result.status_code == 422
    assert result.context is not None


async def test_response_model_filtering_drops_the_extra_field_when_guarded() -> None:
    result = await HangUpClient(shop_app(guarded=True)).get("/filtered")

    assert json.loads(result.body) == {"name": "visible"}


async def test_exception_handler_gets_the_endpoints_own_exception_not_a_group() -> None:
    raised: list[ValueError] = []
    handled: list[Exception] = []
    app = FastAPI()

    @app.exception_handler(ValueError)
    async def on_value_error(request: Request, exc: ValueError) -> JSONResponse:
        handled.append(exc)
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/bad")
    async def bad(ctx: CancelCtx) -> None:
        await anyio.lowlevel.checkpoint()
        error = ValueError("bad value")
        raised.append(error)
        raise error

    result = await HangUpClient(app).get("/bad")

    assert result.status_code == 400
    assert handled == raised
    assert type(handled[0]) is ValueError


async def test_unhandled_error_escapes_the_app_as_itself_not_a_group() -> None:
    app = FastAPI()

    @app.get("/broken")
    async def broken(ctx: CancelCtx) -> None:
        await anyio.lowlevel.checkpoint()
        raise KeyError("missing")

    send = RecordingSend()
    with anyio.fail_after(5), pytest.raises(KeyError) as raised:
        await app(http_scope("GET", "/broken"), ScriptedReceive(body_messages([])), send)

    assert type(raised.value) is KeyError
    assert send.status == 500  # Starlette's ServerErrorMiddleware, as without the extension


# -- Shield means shield -------------------------------------------------------------------


async def test_shielded_block_runs_to_completion_and_cancellation_follows_it() -> None:
    started = anyio.Event()
    steps: list[str] = []
    app = FastAPI()

    @app.post("/pay")
    async def pay(ctx: CancelCtx) -> dict[str, bool]:
        with ctx.shield():
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
            await anyio.sleep(0.05)  # an await after the hang-up, still shielded
            steps.append(f"charged, is_cancelled={ctx.is_cancelled}")
        steps.append("after the block")  # no await yet: still runs
        await anyio.sleep(5)
        steps.append("unreachable")
        return {"paid": True}

    result = await HangUpClient(app).post("/pay", hang_up_on=started)

    assert steps == ["charged, is_cancelled=True", "after the block"]
    assert result.messages == []
    assert result.elapsed < 3.0


async def test_endpoint_returning_right_after_a_shield_sends_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    app = FastAPI()

    @app.post("/pay")
    async def pay(ctx: CancelCtx) -> dict[str, bool]:
        with ctx.shield():
            started.set()
            assert await eventually(lambda: ctx.is_cancelled)
        return {"paid": True}  # no await after the block: nobody to send this to

    result = await HangUpClient(app).post("/pay", hang_up_on=started)

    assert result.cancelled
    assert result.messages == []
    assert len(hang_up_records(caplog)) == 1


# -- Sync endpoints ------------------------------------------------------------------------


async def test_sync_endpoint_sees_is_cancelled_and_returns_early(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    seen: list[bool] = []
    app = FastAPI()

    @app.get("/crunch")
    def crunch(ctx: CancelCtx) -> dict[str, bool]:
        anyio.from_thread.run_sync(started.set)
        deadline = time.monotonic() + 3
        while not ctx.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.01)  # one step of blocking work
        seen.append(ctx.is_cancelled)
        return {"finished": True}

    result = await HangUpClient(app).get("/crunch", hang_up_on=started)

    assert seen == [True]
    assert result.messages == []
    assert result.elapsed < 3.0  # returned early, not at the deadline
    assert len(hang_up_records(caplog)) == 1


# -- One context per request ---------------------------------------------------------------


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


async def test_every_use_in_one_request_shares_one_context_and_one_watcher(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    started = anyio.Event()
    seen: list[CancelOnDisconnect] = []

    async def through_a_dependency(ctx: CancelCtx) -> CancelOnDisconnect:
        return ctx

    app = FastAPI()

    @app.get("/shared")
    async def shared(
        via_sub: Annotated[CancelOnDisconnect, Depends(through_a_dependency)],
        uncached: UncachedCtx,
        direct: CancelCtx,
    ) -> None:
        seen.extend([via_sub, uncached, direct])
        await anyio.wait_all_tasks_blocked()
        started.set()
        await anyio.sleep(5)

    counter = ReceiveCounter(app)
    result = await HangUpClient(counter).get("/shared", hang_up_on=started)

    assert len(seen) == 3
    assert seen[0] is seen[1] is seen[2] is result.context
    assert counter.max_waiting == 1  # one watcher on the raw receive
    assert result.cancelled
    assert len(hang_up_records(caplog)) == 1


# -- Yield dependencies around the endpoint ------------------------------------------------


@pytest.mark.parametrize("dependency_scope", ["request", "function"])
async def test_yield_dependency_after_cancel_ctx_is_closed_on_hang_up(
    dependency_scope: Literal["request", "function"],
) -> None:
    started = anyio.Event()
    steps: list[str] = []

    async def connection() -> AsyncIterator[str]:
        try:
            yield "connection"
        finally:
            await anyio.sleep(0.01)  # closing a connection awaits
            steps.append("connection closed")

    app = FastAPI()

    @app.get("/query")
    async def query(
        ctx: CancelCtx,
        conn: Annotated[str, Depends(connection, scope=dependency_scope)],
    ) -> None:
        started.set()
        await anyio.sleep(5)

    result = await HangUpClient(app).get("/query", hang_up_on=started)

    assert steps == ["connection closed"]
    assert result.cancelled
    assert result.messages == []


async def test_yield_dependency_before_cancel_ctx_sees_client_disconnected() -> None:
    started = anyio.Event()
    seen: list[BaseException] = []

    async def transaction() -> AsyncIterator[None]:
        try:
            yield
        except BaseException as exc:
            seen.append(exc)
            raise

    app = FastAPI()

    @app.get("/write")
    async def write(tx: Annotated[None, Depends(transaction)], ctx: CancelCtx) -> None:
        started.set()
        await anyio.sleep(5)

    result = await HangUpClient(app).get("/write", hang_up_on=started)

    assert len(seen) == 1
    assert type(seen[0]) is ClientDisconnected
    assert result.messages == []


# -- Misuse gets an error that teaches -----------------------------------------------------


async def test_cancel_ctx_on_a_websocket_route_explains_itself() -> None:
    # Driven by hand: importing Starlette's TestClient with httpx warns (deprecated) now.
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket, ctx: CancelCtx) -> None:
        await websocket.accept()  # pragma: no cover - the dependency refuses first

    scope = {**http_scope("GET", "/ws"), "type": "websocket", "scheme": "ws", "subprotocols": []}
    del scope["method"]
    receive = ScriptedReceive([{"type": "websocket.connect"}])
    send = RecordingSend()
    with anyio.fail_after(5), pytest.raises(TypeError, match="websocket route") as err:
        await app(scope, receive, send)

    assert "WebSocketDisconnect" in str(err.value)  # what to use instead


def _use_shield(ctx: CancelOnDisconnect) -> object:
    return ctx.shield()


def _use_scope(ctx: CancelOnDisconnect) -> object:
    return ctx.scope


USES = pytest.mark.parametrize(
    ("use", "name"), [(_use_shield, "shield()"), (_use_scope, "scope")], ids=["shield", "scope"]
)


@USES
async def test_context_used_after_its_request_ended_explains_itself(
    use: Callable[[CancelOnDisconnect], object], name: str
) -> None:
    leaked: list[CancelOnDisconnect] = []
    app = FastAPI()

    @app.get("/leak")
    async def leak(ctx: CancelCtx) -> None:
        leaked.append(ctx)

    await HangUpClient(app).get("/leak")

    with pytest.raises(RuntimeError, match=r"after its request ended.*background task") as err:
        use(leaked[0])
    assert f"ctx.{name}" in str(err.value)


@USES
async def test_context_scope_used_from_a_worker_thread_explains_itself(
    use: Callable[[CancelOnDisconnect], object], name: str
) -> None:
    errors: list[str] = []
    app = FastAPI()

    @app.get("/sync")
    def sync(ctx: CancelCtx) -> dict[str, bool]:
        try:
            use(ctx)
        except RuntimeError as exc:
            errors.append(str(exc))
        return {"ok": True}

    result = await HangUpClient(app).get("/sync")

    assert result.status_code == 200
    assert len(errors) == 1
    assert f"ctx.{name} was used from a worker thread" in errors[0]
    assert "ctx.is_cancelled" in errors[0]


async def test_calling_cancel_ctx_by_hand_explains_how_to_declare_it() -> None:
    request = Request(http_scope("GET", "/"), ScriptedReceive())

    with pytest.raises(RuntimeError, match=r"must be solved by FastAPI.*CancelCtx"):
        await cancel_ctx(request)


async def test_application_cancelling_ctx_scope_gets_a_runtime_error_saying_so() -> None:
    app = FastAPI()

    @app.get("/self-cancel")
    async def self_cancel(ctx: CancelCtx) -> None:
        ctx.scope.cancel()
        await anyio.sleep(5)

    with anyio.fail_after(5), pytest.raises(RuntimeError, match="not by a hang-up") as err:
        await app(
            http_scope("GET", "/self-cancel"), ScriptedReceive(body_messages([])), RecordingSend()
        )

    assert "cancelled by the application" in str(err.value)


# -- No task outlives its request ----------------------------------------------------------


@pytest.mark.parametrize("hang_up", [True, False], ids=["hung-up", "completed"])
async def test_no_watcher_task_outlives_the_request(hang_up: bool) -> None:
    started = anyio.Event()
    during: set[object] = set()
    app = FastAPI()

    @app.get("/work")
    async def work(ctx: CancelCtx) -> None:
        await anyio.wait_all_tasks_blocked()  # the watcher is running by now
        during.update(running_tasks())
        started.set()
        if hang_up:
            await anyio.sleep(5)

    before = running_tasks()
    result = await HangUpClient(app).get("/work", hang_up_on=started if hang_up else None)
    for _ in range(3):
        await anyio.lowlevel.checkpoint()
    after = running_tasks()

    assert result.cancelled is hang_up
    assert during - before  # the watcher (and the client's helper task) existed meanwhile
    assert not (during - before) & after
    assert after <= before


@pytest.mark.parametrize("guard", ["dependency", "route"])
async def test_hang_up_while_the_endpoint_reads_the_body_ends_quietly(
    guard: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    got: list[bytes] = []
    receive = ScriptedReceive([{"type": "http.request", "body": b"first", "more_body": True}])
    app = FastAPI()
    if guard == "route":
        app.router.route_class = cancellable_route(methods=ALL_METHODS)

    @app.post("/upload")  # the route class guards POST only when told to
    async def upload(request: Request, ctx: CancelCtx) -> None:
        async for chunk in request.stream():
            got.append(chunk)
            receive.push({"type": "http.disconnect"})  # the client goes half-way through

    send = RecordingSend()
    with anyio.fail_after(5):
        await app(http_scope("POST", "/upload"), receive, send)  # must not raise

    assert got == [b"first"]
    assert send.messages == []
    assert len(hang_up_records(caplog)) == 1


def test_depends_on_the_context_class_explains_itself_at_definition() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="declare the parameter as `ctx: CancelCtx`"):

        @app.get("/x")
        async def x(ctx: Annotated[CancelOnDisconnect, Depends()]) -> None:
            return None


def test_bare_context_annotation_explains_itself_at_definition() -> None:
    app = FastAPI()
    with pytest.raises(TypeError, match="declare the parameter as `ctx: CancelCtx`"):

        @app.get("/y")
        async def y(ctx: CancelOnDisconnect) -> None:
            return None
