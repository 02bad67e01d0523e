"""The four entry points into a request's context, as routers and apps the tests build.

Every promise must hold whichever entry point made the request's context, so a test takes
the ``entry`` fixture (``tests/conftest.py``) and builds its app through it:

- ``dependency``: ``ctx: Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(...))]``;
- ``decorator``: ``@cancellable(...)`` on an endpoint without a ``ctx`` parameter, so the
  decorator's own wrapper makes the context (the endpoint finds it in the ASGI scope);
- ``decorator+ctx``: ``@cancellable(...)`` on an endpoint that declares ``ctx: CancelCtx``
  (the decorator hands its settings to that dependency);
- ``route``: a router whose ``route_class`` is ``cancellable_route(methods=ALL_METHODS, ...)``
  (every method guarded), endpoint with ``ctx: CancelCtx``.

A test writes its endpoint once, as a user would, and registers it on ``entry.router()``.
If it needs the context it declares ``ctx: CancelOnDisconnect``; the router rewrites that
parameter into the entry point's form. An endpoint without ``ctx`` is guarded all the same:
the dependency and ``decorator+ctx`` entry points add a hidden ``ctx`` parameter that the
endpoint never sees.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
runtime, and they name aliases local to the factories.
"""

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast

import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.requests import HTTPConnection

from fastapi_hangup import (
    ALL_METHODS,
    CancelCtx,
    CancelOnDisconnect,
    cancel_ctx_with,
    cancellable,
    cancellable_route,
)
from fastapi_hangup._guard import SCOPE_KEY

Entry = Literal["dependency", "decorator", "decorator+ctx", "route"]
ENTRY_POINTS: tuple[Entry, ...] = ("dependency", "decorator", "decorator+ctx", "route")

AsyncWork = Callable[[CancelOnDisconnect], Awaitable[object]]
SyncWork = Callable[[CancelOnDisconnect], object]

PATH = "/work"
CTX = "ctx"
_CONNECTION = "entry_point_connection__"


def only_on(*names: Entry, reason: str) -> pytest.MarkDecorator:
    """Run a test that takes ``entry`` on ``names`` only; ``reason`` says why the rest do
    not apply (it is for the reader: the others are not collected)."""
    assert reason, "say why the other entry points do not apply"
    return pytest.mark.parametrize("entry", [EntryPoint(name) for name in names], ids=names)


@dataclass(frozen=True)
class EntryPoint:
    """One way into a request's context; builds routers and apps guarded that way."""

    name: Entry

    def __str__(self) -> str:
        return self.name

    def router(self, **options: Any) -> APIRouter:
        """A router whose routes this entry point guards with ``options`` (``deadline``,
        ``grace``, ``deadline_header``, ``callback_timeout``)."""
        return GuardedRouter(self.name, options)

    def app(self, work: AsyncWork, **options: Any) -> FastAPI:
        """An app whose ``GET /work`` awaits ``work(ctx)`` and returns what it returns."""
        router = self.router(**options)

        async def endpoint(ctx: CancelOnDisconnect) -> object:
            return await work(ctx)

        router.add_api_route(PATH, endpoint, methods=["GET"], response_model=None)
        return app_with(router)

    def sync_app(self, work: SyncWork, **options: Any) -> FastAPI:
        """Like :meth:`app`, with a sync ``def`` endpoint (FastAPI runs it in a thread)."""
        router = self.router(**options)

        def endpoint(ctx: CancelOnDisconnect) -> object:
            return work(ctx)

        router.add_api_route(PATH, endpoint, methods=["GET"], response_model=None)
        return app_with(router)


def app_with(router: APIRouter) -> FastAPI:
    """A FastAPI app serving ``router``'s routes."""
    app = FastAPI()
    app.include_router(router)
    return app


class GuardedRouter(APIRouter):
    """An ``APIRouter`` that guards every endpoint added to it the way ``entry`` does."""

    def __init__(self, entry: Entry, options: dict[str, Any]) -> None:
        if entry == "route":
            super().__init__(route_class=cancellable_route(methods=ALL_METHODS, **options))
        else:
            super().__init__()
        self.entry_point: Entry = entry
        self.guard_options = options  # not `options`: that is APIRouter's OPTIONS decorator

    def add_api_route(  # every route decorator (get, post, api_route, ...) ends up here
        self, path: str, endpoint: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> None:
        super().add_api_route(
            path, guarded(self.entry_point, endpoint, self.guard_options), *args, **kwargs
        )


def guarded(entry: Entry, endpoint: Callable[..., Any], options: dict[str, Any]) -> Any:
    """``endpoint``, with its ``ctx`` parameter (if any) in ``entry``'s form."""
    signature = inspect.signature(endpoint, eval_str=True)
    wants_ctx = CTX in signature.parameters
    if entry == "decorator":
        params = [p for p in signature.parameters.values() if p.name != CTX]
        if wants_ctx:
            params = _append(params, _CONNECTION, HTTPConnection)
    else:
        if entry == "dependency":
            ctx_type: Any = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(**options))]
        else:
            ctx_type = CancelCtx
        params = [
            p.replace(annotation=ctx_type) if p.name == CTX else p
            for p in signature.parameters.values()
        ]
        if not wants_ctx and entry != "route":  # the route class needs no parameter
            params = _append(params, CTX, ctx_type)

    def arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
        if _CONNECTION in kwargs:
            connection: HTTPConnection = kwargs.pop(_CONNECTION)
            # The bare decorator gives the endpoint no context; it lives in the ASGI scope
            # while the endpoint runs (where every entry point looks for it).
            kwargs[CTX] = connection.scope[SCOPE_KEY].ctx
        elif not wants_ctx:
            kwargs.pop(CTX, None)
        return kwargs

    wrapper: Any
    if inspect.iscoroutinefunction(endpoint):

        async def wrapper(**kwargs: Any) -> Any:
            return await endpoint(**arguments(kwargs))

    else:  # sync, or a generator: FastAPI looks at the unwrapped endpoint to tell which

        def wrapper(**kwargs: Any) -> Any:
            return endpoint(**arguments(kwargs))

    functools.update_wrapper(wrapper, endpoint)
    wrapper.__signature__ = signature.replace(parameters=params)
    if entry.startswith("decorator"):
        decorate = cast(Callable[[Callable[..., Any]], Any], cancellable(**options))
        return decorate(wrapper)
    return wrapper


def _append(params: list[inspect.Parameter], name: str, annotation: Any) -> list[inspect.Parameter]:
    """``params`` with a keyword-only ``name`` added (before a ``**kwargs``, if any)."""
    hidden = inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)
    at = len(params)
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    return [*params[:at], hidden, *params[at:]]


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Every record at ERROR or above, from any logger."""
    return [record for record in caplog.records if record.levelno >= logging.ERROR]
