"""Every place fastapi-hangup relies on FastAPI or Starlette internals, in one file.

Each function names the version it was checked against; ``tests/test_fastapi_internals.py``
pins every assumption, so a FastAPI or Starlette upgrade is a review of this file and a run of
that test. Checked against FastAPI 0.165.0 and Starlette 1.10.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import Any

import anyio
import fastapi.routing
from fastapi import Request
from fastapi.dependencies.models import (
    _is_async_gen_callable,
    _is_coroutine_callable,
    _is_gen_callable,
)
from fastapi.routing import APIRoute
from fastapi.telemetry._api import _RequestTelemetry
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.types import ExceptionHandler, Receive, Scope, Send
from starlette.websockets import WebSocket


def exit_stacks(scope: Scope) -> tuple[AsyncExitStack, AsyncExitStack] | None:
    """FastAPI's per-request exit stacks: ``(request stack, function stack)``, or ``None``.

    ``fastapi/routing.py`` (``request_response``) opens the request stack around the whole
    request (it closes after the response is sent) and the function stack inside it (it
    closes when the endpoint returns); yield dependencies go on one of them by their
    ``Depends(scope=...)``. Since FastAPI 0.121.
    """
    request_stack = scope.get("fastapi_inner_astack")
    function_stack = scope.get("fastapi_function_astack")
    if isinstance(request_stack, AsyncExitStack) and isinstance(function_stack, AsyncExitStack):
        return request_stack, function_stack
    return None


def runs_an_endpoint(scope: Scope) -> bool:
    """Whether the dependencies being solved belong to an endpoint (an ``APIRoute``).

    Only there does FastAPI close the function stack when the endpoint returns, before the
    response is sent (``request_response``). The low-priority routes of ``app.frontend()``
    solve the app's dependencies too, but keep both stacks open while the file is sent
    (``_solve_dependencies``): a guard there could not tell the end of the response from a
    hang-up. Starlette's router sets ``scope["route"]`` when a route matches.
    """
    return isinstance(scope.get("route"), APIRoute)


def adopt_request(
    request: Request, receive: Receive, exc_class: type[Exception], handler: ExceptionHandler
) -> bool:
    """Hand ``request`` to a guard; return whether its body was read before.

    One call for three internals, as the dependency and the decorator make it per request:

    - Every reader of ``request`` (``body()``, ``stream()``, ``form()``, body params,
      ``is_disconnected()``) goes through ``receive`` from now on. FastAPI hands one
      ``Request`` to body parsing, dependencies and the endpoint; Starlette reads it through
      the private ``_receive`` (``starlette/requests.py``), which has no public setter. (The
      route class needs none of this: it wraps ``receive`` at ASGI level.)
    - ``handler`` handles ``exc_class`` unless the app has a handler for it. Starlette's
      ``ExceptionMiddleware`` publishes its own handler dict as the first element of
      ``scope["starlette.exception_handlers"]`` and looks handlers up there; the app's public
      ``add_exception_handler`` no longer reaches it once the middleware stack is built (on
      the first request). The fallback for apps that never called
      ``fastapi_hangup.document_cancellation(app)``, which registers it the public way.
    - Whether the body was read: FastAPI reads body parameters before it solves
      dependencies. Starlette caches a read body as ``_body`` and marks a consumed stream
      with ``_stream_consumed``.
    """
    read = hasattr(request, "_body") or bool(getattr(request, "_stream_consumed", False))
    request._receive = receive
    handlers = request.scope.get("starlette.exception_handlers")
    if handlers is not None:
        handlers[0].setdefault(exc_class, handler)
    return read


def websocket_channels(websocket: WebSocket) -> tuple[Receive, Send]:
    """The raw ``receive`` and ``send`` a ``WebSocket`` reads and writes through.

    Starlette keeps them as the private ``_receive`` and ``_send`` (``starlette/websockets.py``)
    and FastAPI hands the one ``WebSocket`` to dependencies and the endpoint.
    """
    return websocket._receive, websocket._send


def route_websocket(websocket: WebSocket, receive: Receive, send: Send) -> None:
    """Make ``websocket`` read through ``receive`` and write through ``send`` from now on."""
    websocket._receive = receive
    websocket._send = send


def request_send(request: Request) -> Send:
    """The ``send`` the route was called with, which FastAPI's ``Request`` keeps privately.

    ``fastapi/routing.py`` (``request_response``) builds the request with the route's own
    ``send``, outside the route's exception wrapper: a message sent there is not seen as the
    start of the response by the handler lookup that follows.
    """
    return request._send


def is_disconnect_probe() -> bool:
    """Whether the caller of ``receive()`` is Starlette's ``Request.is_disconnected()``.

    It calls ``receive()`` inside an already-cancelled ``anyio.CancelScope`` to peek without
    waiting (``starlette/requests.py``, ``is_disconnected``): its effective deadline is
    ``-inf``, which no ordinary reader's is.
    """
    return anyio.current_effective_deadline() == -math.inf


def behind_base_http_middleware(scope: Scope) -> bool:
    """Whether an ``@app.middleware("http")`` (a ``BaseHTTPMiddleware``) wraps the app.

    A heuristic: it reads the app's ``user_middleware`` list (``starlette/applications.py``),
    so it misses a ``BaseHTTPMiddleware`` that wraps the app from outside (a parent app).
    """
    middleware = getattr(scope.get("app"), "user_middleware", ())
    return any(
        isinstance(m.cls, type) and issubclass(m.cls, BaseHTTPMiddleware) for m in middleware
    )


def included_router(route: Any) -> Any | None:
    """The router included into another one, if ``route`` is such an entry.

    FastAPI 0.165 keeps an included router as one route entry whose ``original_router``
    holds the routes as they were defined.
    """
    return getattr(route, "original_router", None)


def is_coroutine_callable(call: Callable[..., Any]) -> bool:
    """Whether FastAPI awaits ``call`` on the event loop (rather than run it in a thread).

    FastAPI's own rule (``fastapi/dependencies/models.py``): it looks through
    ``functools.partial`` and ``__wrapped__``, and at an object's ``__call__``. Using it
    makes ``@cancellable`` decide exactly as FastAPI does.
    """
    return _is_coroutine_callable(call)


def is_generator_callable(call: Callable[..., Any]) -> bool:
    """Whether FastAPI treats ``call`` as a (sync or async) generator endpoint: a stream."""
    return _is_gen_callable(call) or _is_async_gen_callable(call)


def request_telemetry(scope: Scope) -> _RequestTelemetry | None:
    """FastAPI's native telemetry record of this request, when telemetry is on for it.

    ``fastapi/telemetry/_asgi.py`` (``NativeTelemetry``, FastAPI 0.163+) keeps it in
    ``scope["fastapi.telemetry"]``: its ``span`` is the server span (ended after the app
    returns), its ``status_code`` what the span and ``http.server.request.duration`` report,
    its ``route`` the full path template.
    """
    value = scope.get("fastapi.telemetry")
    return value if isinstance(value, _RequestTelemetry) else None


def route_template(scope: Scope, telemetry: _RequestTelemetry | None) -> str | None:
    """The matched route's full path template, prefixes of included routers included.

    FastAPI's telemetry computes it (mount prefixes too); without telemetry, FastAPI 0.165
    keeps an included route's prefixed template in its effective route context
    (``fastapi/routing.py``), and ``scope["route"]`` holds the route as it was defined.
    """
    if telemetry is not None and telemetry.route is not None:
        return telemetry.route
    effective_context = getattr(fastapi.routing, "_get_scope_effective_route_context", None)
    context = effective_context(scope) if effective_context is not None else None
    template = getattr(context, "path_format", None) or getattr(scope.get("route"), "path", None)
    return template if isinstance(template, str) else None


def telemetry_config(app: Any) -> Mapping[str, Any] | None:
    """The app's ``FastAPI(telemetry=...)`` settings, defaults filled in (FastAPI 0.163+)."""
    config = getattr(app, "_telemetry", None)
    return config if isinstance(config, Mapping) else None


def routes_stamp(routers: Iterable[Any]) -> tuple[int, ...] | None:
    """Numbers that change whenever a route or a router is added to one of ``routers``.

    FastAPI 0.163+ counts the changes of each ``APIRouter`` in ``_routes_version``
    (``fastapi/routing.py``, ``_mark_routes_changed``: ``add_api_route``, ``add_route``,
    ``include_router``, ``mount``, ...), the key its included routers rebuild their cached
    routes by. Reading one number per router keeps the check per request cheap, where
    ``_get_routes_version()`` walks every route. ``None`` where a router has no such count
    (then every call looks again).
    """
    stamp = []
    for router in routers:
        version = getattr(router, "_routes_version", None)
        if not isinstance(version, int):
            return None
        stamp.append(version)
    return tuple(stamp)
