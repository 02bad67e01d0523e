"""The OpenAPI marks: which operations say "if you hang up, the work stops", and how.

Golden tests: one small app with every way to make a route cancellable (or not), and the
exact table of operations that must carry the mark.

No ``from __future__ import annotations`` here: the apps are built inside the tests, and
FastAPI resolves string annotations in the module's globals.
"""

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from openapi_spec_validator import validate

from fastapi_hangup import (
    ALL_METHODS,
    CancelCtx,
    CancellableRoute,
    CancelOnDisconnect,
    cancel_ctx,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
    document_cancellation,
)

EXTENSION = "x-cancel-on-disconnect"
EXTENSION_DESCRIPTION = (
    "If the client hangs up before the response is complete, the server stops working "
    "on the request."
)
STATUS_499 = {
    "description": "Client Closed Request: the server stopped working on this request because "
    "the client hung up. The client never receives this status; it appears in logs."
}
MARK_TAGS = {"cancellable", "hangup"}


async def audit(ctx: CancelCtx) -> CancelOnDisconnect:
    """A sub-dependency: a route that depends on it is cancellable through it."""
    return ctx


def golden_app() -> FastAPI:
    """Every way a route becomes cancellable (or stays not), on one app."""
    app = FastAPI(title="golden", version="1")

    routed = APIRouter(route_class=CancellableRoute)

    @routed.get("/reports/{name}")  # GET: cancelled by the route class's default policy
    async def report(name: str) -> dict[str, str]:
        return {}

    @routed.post("/orders")  # POST: not cancelled by default
    async def create_order(item: str) -> dict[str, str]:
        return {}

    @routed.post("/previews")  # POST, opted in
    @cancellable
    async def preview(item: str) -> dict[str, str]:
        return {}

    @routed.get("/health")  # GET, opted out
    @cancellable(False)
    async def health() -> dict[str, str]:
        return {}

    tagged = APIRouter(
        prefix="/tagged", tags=["reports"], route_class=cancellable_route(tag="cancellable")
    )

    @tagged.get("/reports")
    async def list_reports() -> list[str]:
        return []

    @tagged.post("/reports")
    async def add_report(name: str) -> dict[str, str]:
        return {}

    writes = APIRouter(
        prefix="/writes", route_class=cancellable_route(methods=ALL_METHODS, tag="cancellable")
    )

    @writes.delete("/{order_id}")
    async def delete_order(order_id: int) -> None:
        return None

    @app.get("/search")  # a plain route, decorated
    @cancellable
    async def search(q: str) -> list[str]:
        return []

    @app.get("/ctx")  # a plain route with the dependency
    async def with_ctx(ctx: CancelCtx) -> dict[str, str]:
        return {}

    @app.post("/ctx-deep")  # a plain route whose sub-dependency takes the context
    async def with_deep_ctx(ctx: Annotated[CancelOnDisconnect, Depends(audit)]) -> dict[str, str]:
        return {}

    @app.get("/plain")
    async def plain() -> dict[str, str]:
        return {}

    @app.get("/opted-out")
    @cancellable(False)
    async def opted_out() -> dict[str, str]:
        return {}

    included = APIRouter(prefix="/included")

    @included.get("/search")
    @cancellable
    async def included_search(q: str) -> list[str]:
        return []

    app.include_router(routed)
    app.include_router(tagged)
    app.include_router(writes)
    app.include_router(included)
    document_cancellation(app, tag="hangup")
    return app


#: (path, method) -> (the mark's methods, the operation's tags) for every marked operation.
MARKED: dict[tuple[str, str], tuple[list[str], list[str]]] = {
    ("/reports/{name}", "get"): (["GET"], []),
    ("/previews", "post"): (["POST"], []),
    ("/tagged/reports", "get"): (["GET"], ["reports", "cancellable"]),
    ("/writes/{order_id}", "delete"): (["DELETE"], ["cancellable"]),
    ("/search", "get"): (["GET"], ["hangup"]),
    ("/ctx", "get"): (["GET"], ["hangup"]),
    ("/ctx-deep", "post"): (["POST"], ["hangup"]),
    ("/included/search", "get"): (["GET"], ["hangup"]),
}
UNMARKED = {
    ("/orders", "post"),
    ("/health", "get"),
    ("/tagged/reports", "post"),
    ("/plain", "get"),
    ("/opted-out", "get"),
}


def operations(document: dict[str, Any]) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield (path, method), operation


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return golden_app().openapi()


def test_golden_app_has_exactly_the_expected_operations(document: dict[str, Any]) -> None:
    assert {key for key, _ in operations(document)} == set(MARKED) | UNMARKED


def test_exactly_the_cancellable_operations_are_marked(document: dict[str, Any]) -> None:
    marked = {
        key: (operation[EXTENSION]["methods"], operation.get("tags", []))
        for key, operation in operations(document)
        if EXTENSION in operation
    }

    assert marked == MARKED


@pytest.mark.parametrize(("path", "method"), sorted(MARKED))
def test_mark_has_the_documented_value(document: dict[str, Any], path: str, method: str) -> None:
    methods, _ = MARKED[path, method]

    assert document["paths"][path][method][EXTENSION] == {
        "methods": methods,
        "description": EXTENSION_DESCRIPTION,
    }


@pytest.mark.parametrize(("path", "method"), sorted(MARKED))
def test_marked_operation_documents_the_499_response(
    document: dict[str, Any], path: str, method: str
) -> None:
    responses = document["paths"][path][method]["responses"]

    assert responses["499"] == STATUS_499
    assert "200" in responses  # added to the operation's responses, not instead of them


@pytest.mark.parametrize(("path", "method"), sorted(UNMARKED))
def test_operation_that_is_not_cancellable_carries_no_mark(
    document: dict[str, Any], path: str, method: str
) -> None:
    operation = document["paths"][path][method]

    assert EXTENSION not in operation
    assert "499" not in operation["responses"]
    assert not MARK_TAGS & set(operation.get("tags", []))


def test_marked_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


# -- Details of marking ----------------------------------------------------------------------


def test_marks_keep_the_routes_own_responses_and_extensions() -> None:
    router = APIRouter(route_class=CancellableRoute)

    @router.get(
        "/items/{item_id}",
        responses={404: {"description": "No such item"}},
        openapi_extra={"x-rate-limit": 10},
    )
    async def item(item_id: int) -> dict[str, int]:
        return {}

    app = FastAPI()
    app.include_router(router)
    operation = app.openapi()["paths"]["/items/{item_id}"]["get"]

    assert operation["responses"]["404"] == {"description": "No such item"}
    assert operation["responses"]["499"] == STATUS_499
    assert operation["x-rate-limit"] == 10
    assert operation[EXTENSION]["methods"] == ["GET"]


def test_document_cancellation_rebuilds_a_schema_built_before() -> None:
    app = FastAPI()

    @app.get("/search")
    @cancellable
    async def search() -> list[str]:
        return []

    before = app.openapi()
    document_cancellation(app)
    after = app.openapi()

    assert EXTENSION not in before["paths"]["/search"]["get"]
    assert EXTENSION in after["paths"]["/search"]["get"]


def test_document_cancellation_twice_adds_the_tag_once() -> None:
    app = FastAPI()

    @app.get("/ctx")
    async def with_ctx(ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx)]) -> None:
        return None

    document_cancellation(app, tag="hangup")
    document_cancellation(app, tag="hangup")

    assert app.openapi()["paths"]["/ctx"]["get"]["tags"] == ["hangup"]


def test_plain_app_without_document_cancellation_is_not_marked() -> None:
    app = FastAPI()

    @app.get("/search")
    @cancellable
    async def search() -> list[str]:
        return []

    operation = app.openapi()["paths"]["/search"]["get"]

    assert EXTENSION not in operation
    assert "499" not in operation["responses"]


# -- Edge cases ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Duplicate Operation ID:UserWarning")  # FastAPI's, for any
def test_multi_method_route_names_the_methods_it_cancels_on_every_operation() -> None:
    # FastAPI applies openapi_extra and responses per route, not per method (documented).
    router = APIRouter(route_class=CancellableRoute)

    @router.api_route("/items", methods=["GET", "POST"])
    async def items() -> list[str]:
        return []

    app = FastAPI()
    app.include_router(router)
    item = app.openapi()["paths"]["/items"]

    assert item["get"][EXTENSION]["methods"] == ["GET"]
    assert item["post"][EXTENSION]["methods"] == ["GET"]  # POST is not cancelled on this router


def test_document_cancellation_skips_a_decorator_that_cancels_none_of_the_routes_methods() -> None:
    app = FastAPI()

    @app.post("/export")
    @cancellable(methods={"GET"})
    async def export() -> None:
        return None

    document_cancellation(app)
    operation = app.openapi()["paths"]["/export"]["post"]

    assert EXTENSION not in operation
    assert "499" not in operation["responses"]


def test_document_cancellation_marks_a_cancel_ctx_with_dependency() -> None:
    app = FastAPI()

    @app.get("/report")
    async def report(
        ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=5))],
    ) -> None:
        return None

    document_cancellation(app)

    assert EXTENSION in app.openapi()["paths"]["/report"]["get"]
