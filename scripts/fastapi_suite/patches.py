"""The patches that force fastapi-hangup onto every FastAPI app of a test run.

Each mode is one way a user adopts the package, applied everywhere at once, so FastAPI's own
tests exercise it on every route shape they have:

- ``route``: every router whose route class is the default ``APIRoute`` uses
  ``cancellable_route(methods=ALL_METHODS)`` instead (a route class a test sets is kept);
- ``dependency``: every ``APIRoute`` gets ``Depends(cancel_ctx)`` among its dependencies;
- ``decorator``: every ``APIRoute``'s endpoint is wrapped in ``@cancellable`` (an error it
  raises at definition time is not hidden: it fails the test that defines the route);
- ``app``: every ``FastAPI()`` app calls ``add_cancellation(app, methods=ALL_METHODS)`` as
  the last step of its construction.

In every mode, ``baseline`` included, the OpenAPI marks the package documents (the operation
extension ``x-cancel-on-disconnect``, its ``499`` response, and the sentence ``@cancellable``
adds to a description) are stripped from generated documents, the only differences the
check allows.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from typing import Any

import fastapi.applications
import fastapi.openapi.utils
from fastapi import Depends, FastAPI
from fastapi.routing import APIRoute, APIRouter

import fastapi_hangup
from fastapi_hangup._openapi import DESCRIPTION_NOTE, EXTENSION, STATUS_499

from . import MODES

applied: Counter[str] = Counter()
"""How many routers or routes each patch changed in this process (a sanity check)."""

_ROUTE_CLASS = fastapi_hangup.cancellable_route(methods=fastapi_hangup.ALL_METHODS)
_WRAPPED = "__fastapi_suite_wrapped__"


def apply(mode: str) -> None:
    """Patch FastAPI for ``mode``; call it once, before any app is built."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    _patch_openapi()
    if mode == "route":
        _patch_router_init()
    elif mode == "dependency":
        _patch_route_init(_add_dependency)
    elif mode == "decorator":
        _patch_route_init(_wrap_endpoint)
    elif mode == "app":
        _patch_app_init()


def strip_marks(schema: dict[str, Any]) -> dict[str, Any]:
    """Remove exactly the package's documented marks from an OpenAPI document, in place."""
    for section in ("paths", "webhooks"):
        for path_item in (schema.get(section) or {}).values():
            _strip_path_item(path_item)
    return schema


def _strip_path_item(path_item: Any) -> None:
    if not isinstance(path_item, dict):
        return
    for operation in path_item.values():
        if not isinstance(operation, dict):  # "parameters", "servers", "summary", ...
            continue
        if operation.pop(EXTENSION, None) is not None:
            applied["openapi marks stripped"] += 1
        responses = operation.get("responses")
        if isinstance(responses, dict) and responses.get("499") == STATUS_499:
            del responses["499"]
        description = operation.get("description")
        if isinstance(description, str) and description.endswith(DESCRIPTION_NOTE):
            description = description.removesuffix(DESCRIPTION_NOTE).rstrip()
            if description:
                operation["description"] = description
            else:
                del operation["description"]
        for callback in (operation.get("callbacks") or {}).values():
            for callback_item in callback.values():
                _strip_path_item(callback_item)


def _patch_openapi() -> None:
    original_get_openapi = fastapi.openapi.utils.get_openapi

    @functools.wraps(original_get_openapi)
    def get_openapi(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return strip_marks(original_get_openapi(*args, **kwargs))

    # FastAPI.openapi calls the name it imported into fastapi.applications.
    fastapi.openapi.utils.get_openapi = get_openapi
    fastapi.applications.get_openapi = get_openapi  # type: ignore[attr-defined]

    original_openapi = FastAPI.openapi

    @functools.wraps(original_openapi)
    def openapi(self: FastAPI) -> dict[str, Any]:
        return strip_marks(original_openapi(self))

    FastAPI.openapi = openapi  # type: ignore[method-assign]


def _patch_app_init() -> None:
    original = FastAPI.__init__

    @functools.wraps(original)
    def __init__(self: FastAPI, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        fastapi_hangup.add_cancellation(self, methods=fastapi_hangup.ALL_METHODS)
        applied["apps given add_cancellation"] += 1

    FastAPI.__init__ = __init__  # type: ignore[method-assign]


def _patch_router_init() -> None:
    original = APIRouter.__init__

    @functools.wraps(original)
    def __init__(self: APIRouter, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if self.route_class is APIRoute:
            self.route_class = _ROUTE_CLASS
            applied["routers given the route class"] += 1

    APIRouter.__init__ = __init__  # type: ignore[method-assign]


RouteArgs = Callable[[Callable[..., Any], dict[str, Any]], Callable[..., Any]]


def _patch_route_init(change: RouteArgs) -> None:
    """Let ``change`` rewrite the endpoint and keyword arguments of every ``APIRoute``."""
    original = APIRoute.__init__

    @functools.wraps(original)
    def __init__(self: APIRoute, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        endpoint = change(endpoint, kwargs)
        original(self, path, endpoint, **kwargs)

    APIRoute.__init__ = __init__  # type: ignore[method-assign]


def _add_dependency(endpoint: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[..., Any]:
    dependencies = list(kwargs.get("dependencies") or [])
    if not any(getattr(d, "dependency", None) is fastapi_hangup.cancel_ctx for d in dependencies):
        dependencies.append(Depends(fastapi_hangup.cancel_ctx))
        applied["routes given the dependency"] += 1
    kwargs["dependencies"] = dependencies
    return endpoint


def _wrap_endpoint(endpoint: Callable[..., Any], kwargs: dict[str, Any]) -> Callable[..., Any]:
    del kwargs
    if getattr(endpoint, _WRAPPED, False) is True:  # a route made from a wrapped route's endpoint
        return endpoint
    wrapper: Callable[..., Any] = fastapi_hangup.cancellable(endpoint)
    setattr(wrapper, _WRAPPED, True)
    applied["endpoints decorated"] += 1
    return wrapper
