"""What is specific to ``@cancellable``: its forms, the signature it leaves alone, its options,
its misuse errors, and generator endpoints (which need the route class).

The promises every entry point keeps (hang-up, transparency, lossless bodies, ...) are tested
once for all four in the feature files, through the ``entry`` fixture.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals, where a test's local
dependencies do not live.
"""

import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from pydantic import BaseModel

from fastapi_hangup import (
    CancelCtx,
    CancellableRoute,
    CancelOnDisconnect,
    cancel_ctx,
    cancellable,
    document_cancellation,
)
from fastapi_hangup._openapi import DESCRIPTION_NOTE
from fastapi_hangup.testing import HangUpClient
from tests._asgi import BODY_END, RecordingSend, ScriptedReceive, http_scope
from tests._route_kit import abandoned_generators_tolerated

pytestmark = pytest.mark.anyio

F = TypeVar("F", bound=Callable[..., Any])
Mark = Callable[[Callable[..., Any]], Callable[..., Any]]
HIDDEN = "fastapi_hangup_request__"


def undecorated(func: F) -> F:
    return func


# -- Hang-up cancels a decorated async endpoint, in each of the decorator's forms ------------


def three_forms_app(started: anyio.Event, finally_ran: list[str]) -> FastAPI:
    app = FastAPI()

    async def work(name: str) -> dict[str, str]:
        started.set()
        try:
            await anyio.sleep(5)
        finally:
            finally_ran.append(name)
        return {"done": name}

    @app.get("/bare")
    @cancellable
    async def bare() -> dict[str, str]:
        return await work("bare")

    @app.get("/called")
    @cancellable()
    async def called() -> dict[str, str]:
        return await work("called")

    @app.get("/get-only")
    @cancellable(methods={"GET"})
    async def get_only() -> dict[str, str]:
        return await work("get-only")

    return app


FORMS = pytest.mark.parametrize("form", ["bare", "called", "get-only"])


@FORMS
async def test_every_form_cancels_the_endpoint_on_hang_up_and_runs_its_finally(form: str) -> None:
    started = anyio.Event()
    finally_ran: list[str] = []
    app = three_forms_app(started, finally_ran)

    result = await HangUpClient(app).get(f"/{form}", hang_up_on=started)

    assert result.cancelled
    assert finally_ran == [form]
    assert result.messages == []
    assert result.elapsed < 3  # the endpoint would sleep 5 s


@FORMS
async def test_decorated_endpoint_answers_normally_when_the_client_stays(form: str) -> None:
    app = FastAPI()

    @app.get("/bare")
    @cancellable
    async def bare() -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"done": "bare"}

    @app.get("/called")
    @cancellable()
    async def called() -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"done": "called"}

    @app.get("/get-only")
    @cancellable(methods={"GET"})
    async def get_only() -> dict[str, str]:
        await anyio.sleep(0.01)
        return {"done": "get-only"}

    result = await HangUpClient(app).get(f"/{form}")

    assert result.status_code == 200
    assert result.body == f'{{"done":"{form}"}}'.encode()
    assert result.context is not None
    assert not result.context.is_cancelled


# -- The endpoint's own parameters are untouched by the hidden request parameter -------------


class Item(BaseModel):
    name: str
    price: float = 0.0


async def current_user(x_user: str = Header()) -> str:
    return x_user.upper()


def items_app(mark: Mark) -> FastAPI:
    """The same app, with its endpoint decorated by ``mark`` (``cancellable`` or not)."""
    app = FastAPI()

    @app.put("/items/{item_id}")
    @mark
    async def update_item(
        item_id: int,
        item: Item,
        q: str | None = None,
        user: str = Depends(current_user),
    ) -> dict[str, Any]:
        """Update an item."""
        await anyio.lowlevel.checkpoint()
        return {"item_id": item_id, "item": item.model_dump(), "q": q, "user": user}

    return app


def test_decorated_endpoint_has_the_same_openapi_document_as_its_twin() -> None:
    decorated = items_app(cancellable).openapi()
    plain = items_app(undecorated).openapi()

    operation = decorated["paths"]["/items/{item_id}"]["put"]
    assert HIDDEN not in str(decorated)
    assert [p["name"] for p in operation["parameters"]] == ["item_id", "q", "x-user"]
    assert operation["requestBody"] == plain["paths"]["/items/{item_id}"]["put"]["requestBody"]
    # The one difference: the sentence that shows the decorator on a plain router.
    assert operation["description"] == f"Update an item.\n\n{DESCRIPTION_NOTE}"
    operation["description"] = "Update an item."
    assert decorated == plain


def test_decorator_keeps_the_signature_and_adds_only_the_hidden_request_parameter() -> None:
    async def endpoint(item_id: int, q: str | None = None) -> dict[str, int]:
        """Docs."""
        return {"item_id": item_id}

    wrapper = cancellable(endpoint)
    original = inspect.signature(endpoint)
    wrapped = inspect.signature(wrapper)

    visible = [p for name, p in wrapped.parameters.items() if name != HIDDEN]
    assert visible == list(original.parameters.values())
    assert wrapped.parameters[HIDDEN].annotation is Request
    assert wrapped.parameters[HIDDEN].kind is inspect.Parameter.KEYWORD_ONLY
    assert wrapped.return_annotation == original.return_annotation
    assert (wrapper.__name__, wrapper.__doc__) == ("endpoint", f"Docs.\n\n{DESCRIPTION_NOTE}")
    assert wrapper.__wrapped__ is endpoint  # type: ignore[attr-defined]


# -- ctx: CancelCtx inside a decorated endpoint -------------------------------------------


@pytest.mark.parametrize("form", ["alias", "long-form"])
async def test_decorator_options_reach_the_ctx_parameter(form: str) -> None:
    app = FastAPI()
    remaining: list[float] = []

    @app.get("/alias")
    @cancellable(deadline=30)
    async def alias(ctx: CancelCtx) -> dict[str, str]:
        remaining.append(ctx.remaining())
        return {}

    @app.get("/long-form")
    @cancellable(deadline=30)
    async def long_form(ctx: CancelOnDisconnect = Depends(cancel_ctx)) -> dict[str, str]:  # noqa: B008 - the form users write
        remaining.append(ctx.remaining())
        return {}

    result = await HangUpClient(app).get(f"/{form}")

    assert result.status_code == 200
    assert 29 < remaining[0] <= 30  # without the decorator's deadline it would be inf


async def test_decorator_works_on_an_endpoint_without_source_code() -> None:
    # A REPL or a notebook: the placement check cannot read the source, so it steps aside.
    namespace: dict[str, Any] = {"anyio": anyio}
    exec(  # the point: a function without a source file
        "async def work():\n    await anyio.sleep(5)\n",
        namespace,
    )
    app = FastAPI()
    app.get("/work")(cancellable(namespace["work"]))

    result = await HangUpClient(app).get("/work", hang_up_after=0.05)

    assert result.cancelled
    assert result.messages == []


# -- @cancellable(methods=...) and @cancellable(False) on a plain app -----------------------


@pytest.mark.parametrize(("method", "cancelled"), [("GET", True), ("POST", False)])
async def test_methods_option_cancels_only_the_listed_methods(method: str, cancelled: bool) -> None:
    app = FastAPI()
    completed: list[str] = []

    @app.api_route("/work", methods=["GET", "POST"])
    @cancellable(methods={"GET"})
    async def work(q: str = "") -> dict[str, str]:
        await anyio.sleep(0.3)
        completed.append(q)
        return {}

    result = await HangUpClient(app).request(method, f"/work?q={method}", hang_up_after=0.05)

    assert result.hung_up
    assert result.cancelled is cancelled
    assert completed == ([] if cancelled else [method])


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_decorated_endpoint_can_declare_its_own_request_parameter(kind: str) -> None:
    app = FastAPI()

    @app.get("/async")
    @cancellable
    async def async_endpoint(request: Request) -> dict[str, str]:
        return {"path": request.url.path}

    @app.get("/sync")
    @cancellable
    def sync_endpoint(request: Request) -> dict[str, str]:
        return {"path": request.url.path}

    send = RecordingSend()
    await app(http_scope("GET", f"/{kind}"), ScriptedReceive([BODY_END]), send)

    assert send.status == 200
    assert send.messages[-1]["body"] == f'{{"path":"/{kind}"}}'.encode()


async def test_opted_out_endpoint_on_a_plain_app_is_not_cancelled() -> None:
    app = FastAPI()
    completed: list[str] = []

    async def work() -> dict[str, str]:
        await anyio.sleep(0.3)
        completed.append("work")
        return {}

    opted_out = cancellable(False)(work)
    app.get("/work")(opted_out)

    result = await HangUpClient(app).get("/work", hang_up_after=0.05)

    assert opted_out is work  # nothing wraps it
    assert result.hung_up
    assert result.context is None
    assert completed == ["work"]
    assert result.complete  # sent to nobody, as without the extension


# -- Misuse fails early, with a message that says what to do --------------------------------


def test_decorator_above_the_route_decorator_fails_at_setup() -> None:
    app = FastAPI()

    @cancellable
    @app.get("/misplaced")
    async def misplaced() -> None: ...

    with pytest.raises(
        TypeError, match=r"@cancellable is above the route decorator of .*misplaced"
    ):
        document_cancellation(app)


def test_decorator_with_arguments_above_the_route_decorator_fails_at_setup() -> None:
    app = FastAPI()

    @cancellable(methods={"GET"})
    @app.get("/misplaced")
    async def misplaced() -> None: ...

    with pytest.raises(TypeError, match=r"Put @cancellable directly under @app\.get\(\.\.\.\)"):
        document_cancellation(app)


def test_decorator_applied_twice_fails_at_definition() -> None:
    app = FastAPI()

    with pytest.raises(TypeError, match=r"@cancellable was applied twice to .*twice"):

        @app.get("/twice")
        @cancellable
        @cancellable
        async def twice() -> None: ...


def test_decorator_rejects_an_argument_that_is_neither_endpoint_nor_bool() -> None:
    with pytest.raises(
        TypeError, match=r"takes an endpoint or a bool, not 'yes'; use @cancellable"
    ):
        cancellable("yes")  # type: ignore[call-overload]


def test_decorator_rejects_unknown_method_names() -> None:
    with pytest.raises(ValueError, match=r"@cancellable got unknown HTTP methods \['FETCH'\]"):
        cancellable(methods={"GET", "fetch"})


def test_decorator_rejects_a_single_string_of_methods() -> None:
    with pytest.raises(
        TypeError, match=r"takes a collection of methods, e\.g\. \{'GET'\}, not 'GET'"
    ):
        cancellable(methods="GET")


# -- Generator (streaming) endpoints: only the route class can cover their body --------------


def streaming_router(route_class: type[CancellableRoute] | None, produced: list[int]) -> FastAPI:
    router = APIRouter() if route_class is None else APIRouter(route_class=route_class)

    @router.get("/lines")
    @cancellable
    async def lines(count: int = 1000) -> AsyncIterator[dict[str, int]]:
        for line in range(count):  # 10 s by default, if nobody stops it
            produced.append(line)
            yield {"line": line}
            await anyio.sleep(0.01)

    @router.get("/sync-lines")
    @cancellable
    def sync_lines() -> Iterator[dict[str, int]]:
        for line in range(1000):
            produced.append(line)
            yield {"line": line}
            time.sleep(0.01)

    app = FastAPI()
    app.include_router(router)
    return app


async def test_decorated_generator_on_a_plain_router_streams_as_undecorated() -> None:
    produced: list[int] = []
    app = streaming_router(None, produced)

    result = await HangUpClient(app).get("/lines?count=3")

    assert result.status_code == 200
    assert result.body.splitlines() == [f'{{"line":{n}}}'.encode() for n in range(3)]
    assert result.context is None  # nothing guards it: the route class would


async def test_decorated_generator_on_a_plain_router_stops_by_starlettes_own_listener() -> None:
    produced: list[int] = []
    app = streaming_router(None, produced)

    with abandoned_generators_tolerated():  # as without the decorator: Starlette's own way
        result = await HangUpClient(app).get("/lines", hang_up_after_body_chunks=2)

    assert result.hung_up
    assert len(produced) < 1000  # Starlette's disconnect listener ended the stream


async def test_decorated_generator_with_ctx_on_a_plain_router_streams() -> None:
    app = FastAPI()

    @app.get("/lines")
    @cancellable
    async def lines(ctx: CancelCtx) -> AsyncIterator[dict[str, int]]:
        for line in range(3):
            yield {"line": line}

    result = await HangUpClient(app).get("/lines")

    assert result.status_code == 200
    assert result.body.splitlines() == [f'{{"line":{n}}}'.encode() for n in range(3)]


async def test_decorated_generator_on_the_route_class_streams_when_the_client_stays() -> None:
    produced: list[int] = []
    app = streaming_router(CancellableRoute, produced)

    result = await HangUpClient(app).get("/lines?count=5")

    assert result.status_code == 200
    assert result.headers["content-type"] == "application/jsonl"
    assert result.body.splitlines() == [f'{{"line":{n}}}'.encode() for n in range(5)]
    assert result.context is not None
    assert not result.context.is_cancelled


async def test_decorated_generator_on_the_route_class_stops_on_hang_up() -> None:
    produced: list[int] = []
    app = streaming_router(CancellableRoute, produced)

    with abandoned_generators_tolerated():
        result = await HangUpClient(app).get("/lines", hang_up_after_body_chunks=3)

    produced_by_then = len(produced)
    await anyio.sleep(0.1)  # ten more lines, if it were still running

    assert result.cancelled
    assert result.sent_after_hang_up == []
    assert len(produced) == produced_by_then < 100  # stopped, far short of 1000 lines
    assert result.elapsed < 5
