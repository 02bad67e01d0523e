"""Marking cancellable operations in the OpenAPI document."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._fastapi import included_router
from fastapi_hangup._policy import check_placement, is_cancel_dependency, policy_of
from fastapi_hangup._quiet import QUIET_HANDLER

EXTENSION = "x-cancel-on-disconnect"
"""The vendor extension on every cancellable operation."""

STATUS_499 = {
    "description": (
        "Client Closed Request: the server stopped working on this request because the "
        "client hung up. The client never receives this status; it appears in logs."
    )
}


DESCRIPTION_NOTE = (
    "*Cancellable:* if the client hangs up before the response is complete, the server "
    "stops working on the request."
)
"""The sentence ``@cancellable`` adds to its endpoint's description (from the docstring).

FastAPI reads nothing else of an endpoint into its operation, so on a plain router this is
how the decorator alone shows in ``/openapi.json`` and Swagger UI. Where the full mark is
added ([`add_cancellation`][fastapi_hangup.add_cancellation],
[`CancellableRoute`][fastapi_hangup.CancellableRoute]), the sentence is taken out again.
"""


def with_note(doc: str | None) -> str:
    """``doc`` (cleaned as FastAPI cleans it) with ``DESCRIPTION_NOTE`` at the end of
    the part FastAPI shows (before a form feed, where FastAPI cuts the description)."""
    shown, cut, rest = inspect.cleandoc(doc or "").partition("\f")
    shown = shown.rstrip()
    return (
        f"{shown}\n\n{DESCRIPTION_NOTE}{cut}{rest}" if shown else f"{DESCRIPTION_NOTE}{cut}{rest}"
    )


def extension_value(methods: Iterable[str]) -> dict[str, Any]:
    """What ``x-cancel-on-disconnect`` says about an operation's route.

    FastAPI applies ``openapi_extra`` and ``responses`` per route, not per method, so on a
    route that serves several methods and cancels only some, every operation carries the
    mark; ``methods`` names the ones that are cancelled.
    """
    return {
        "methods": sorted(methods),
        "description": (
            "If the client hangs up before the response is complete, the server stops "
            "working on the request."
        ),
    }


def mark_operation(route: APIRoute, methods: Iterable[str], *, tag: str | None = None) -> None:
    """Add the vendor extension, the documented 499 response and the tag to one route."""
    route.openapi_extra = {**(route.openapi_extra or {}), EXTENSION: extension_value(methods)}
    if route.description.endswith(DESCRIPTION_NOTE):  # the full mark says it all
        route.description = route.description.removesuffix(DESCRIPTION_NOTE).rstrip()
    route.responses = {**route.responses, 499: STATUS_499}
    if tag is not None and tag not in route.tags:
        route.tags = [*route.tags, tag]


def document_cancellation(app: FastAPI, *, tag: str | None = None) -> None:
    """Mark the operations that ``@cancellable`` or ``cancel_ctx`` guard, on a plain router.

    A [`CancellableRoute`][fastapi_hangup.CancellableRoute] marks its operations itself. Routes of a
    plain router do not know what their dependencies do, so call this once after adding the routes
    (or at any time before the schema is first built); it marks every route whose endpoint is
    ``@cancellable`` or depends on ``cancel_ctx``, directly or through sub-dependencies.

    It also registers the quiet handler for
    [`ClientDisconnected`][fastapi_hangup.ClientDisconnected] with ``app.add_exception_handler``
    (unless you registered your own), which the dependency and the decorator otherwise add on the
    first guarded request.

    Args:
        app: the application.
        tag: an OpenAPI tag to add to every cancellable operation.

    Raises:
        TypeError: if ``@cancellable`` was placed above a route decorator.
    """
    if ClientDisconnected not in app.exception_handlers:
        app.add_exception_handler(ClientDisconnected, QUIET_HANDLER)
    for route in api_routes(app.routes):
        check_placement(route.endpoint)
        if is_marked(route):
            continue
        policy = policy_of(route.endpoint)
        if policy is not None and policy.enabled:
            methods = policy.methods_for(route.methods or ())
        elif depends_on_cancel_ctx(route.dependant):
            methods = frozenset(route.methods or ())
        else:
            continue
        if methods:
            mark_operation(route, methods, tag=tag)
    app.openapi_schema = None  # rebuild it with the marks


def api_routes(routes: Iterable[Any], routers: list[Any] | None = None) -> Iterator[APIRoute]:
    """Every ``APIRoute`` under ``routes``, those of included routers too.

    With ``routers``, each included router met is appended to it (once, also when a router
    is included twice).
    """
    met = [] if routers is None else routers
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        router = included_router(route)
        if router is not None and all(router is not known for known in met):
            met.append(router)
            yield from api_routes(router.routes, met)


def is_marked(route: APIRoute) -> bool:
    return EXTENSION in (route.openapi_extra or {})


def depends_on_cancel_ctx(dependant: Any) -> bool:
    """Whether ``cancel_ctx`` (or a ``cancel_ctx_with(...)`` one) is among the dependencies."""
    return any(
        is_cancel_dependency(d.call) or depends_on_cancel_ctx(d) for d in dependant.dependencies
    )
