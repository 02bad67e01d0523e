"""``add_cancellation(app)``: one call that makes a whole app cancel on hang-up."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._fastapi import routes_stamp
from fastapi_hangup._openapi import api_routes, depends_on_cancel_ctx, is_marked, mark_operation
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import (
    SAFE_METHODS,
    CancelPolicy,
    check_placement,
    normalize_methods,
    policy_of,
)
from fastapi_hangup._quiet import QUIET_HANDLER
from fastapi_hangup._report import OnStop, set_hook
from fastapi_hangup._route import CancellableRoute, guard_route
from fastapi_hangup._ws_entry import guard_websocket_app

_SET_UP: weakref.WeakKeyDictionary[FastAPI, _AppCancellation] = weakref.WeakKeyDictionary()


def add_cancellation(
    app: FastAPI,
    *,
    methods: Iterable[str] = SAFE_METHODS,
    tag: str | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
    on_stop: OnStop | None = None,
    websockets: bool = False,
) -> None:
    """Cancel the work of every HTTP route of ``app`` when its client hangs up.

    One call, where the app is made, covers every route of the app: those added before it
    and after it, and the routes of routers included from elsewhere. Each request is covered
    whole, as by [`CancellableRoute`][fastapi_hangup.CancellableRoute]: dependencies, the endpoint
    and a streaming body. It also

    - marks every guarded operation in the OpenAPI document (``x-cancel-on-disconnect``,
      the documented ``499`` response, and ``tag``), whichever entry point guards it;
    - registers the quiet handler for [`ClientDisconnected`][fastapi_hangup.ClientDisconnected] with
      ``app.add_exception_handler`` (unless you registered your own);
    - calls ``on_stop`` once for every request whose work is stopped, from every entry
      point (see [`StoppedRequest`][fastapi_hangup.StoppedRequest]).

    Per route, ``@cancellable`` opts a route in (a write too) with its own settings, and
    ``@cancellable(False)`` opts it out; a [`CancellableRoute`][fastapi_hangup.CancellableRoute]
    router keeps its own policy; ``Depends(cancel_ctx)`` shares the request's one context.
    Websocket sessions are guarded with ``websockets=True`` (or where their route declares
    ``ctx: CancelCtx``). ``callbacks`` and ``app.webhooks`` (which document requests to
    *other* servers) and mounted apps are left alone; call ``add_cancellation`` on a mounted
    FastAPI app itself.

    Args:
        app: the application, before it serves its first request.
        methods: the methods cancelled by default. Pass ``ALL_METHODS`` to cancel writes
            too, or an empty set to guard only what ``@cancellable``, the route class and
            the dependency guard (still marked, counted and reported).
        tag: an OpenAPI tag added to every guarded operation.
        deadline: a time budget in seconds for every guarded request; see
            [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        grace: seconds between noticing a hang-up and delivering the cancellation.
        deadline_header: honour an inbound deadline header; see
            [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        callback_timeout: the default time limit of ``on_cancel`` callbacks.
        on_stop: called with a [`StoppedRequest`][fastapi_hangup.StoppedRequest] for every stopped
            request; it runs on the event loop, so keep it short (count, log, enqueue).
        websockets: guard every websocket session of the app too (those of mounted apps
            included): a close by the client while the handler works (not waiting for a
            message) cancels it (see [Websockets](websockets.md)). Without it, only
            websocket routes that declare ``ctx: CancelCtx`` are guarded.

    Raises:
        TypeError: ``app`` is not a FastAPI app, or an ``@cancellable`` sits above its
            route decorator.
        RuntimeError: called twice for one app, or after the app started serving.
        ValueError: for a setting out of range.

    Example:
        ``app = FastAPI(); add_cancellation(app)``
    """
    if not isinstance(app, FastAPI):
        raise TypeError(f"add_cancellation() takes a FastAPI app, not {app!r}")
    if app in _SET_UP:
        raise RuntimeError(
            "add_cancellation() was already called for this app; pass every setting in one "
            "call (routers and routes that need other settings use cancellable_route(...) "
            "or @cancellable(...))."
        )
    allowed = normalize_methods(methods, what="add_cancellation(methods=...)")
    options = CancelOptions.build(
        deadline=deadline,
        grace=grace,
        deadline_header=deadline_header,
        callback_timeout=callback_timeout,
    )
    if on_stop is not None and not callable(on_stop):
        raise TypeError(f"on_stop must be a function taking a StoppedRequest, not {on_stop!r}")
    integration = _AppCancellation(app, allowed, options, tag, websockets=websockets)
    try:
        app.add_middleware(_FollowRoutes, integration=integration)
    except RuntimeError as exc:
        raise RuntimeError(
            "add_cancellation(app) must be called before the app serves its first request: "
            "call it right where the app is created."
        ) from exc
    integration.follow()  # the routes there are now, and a misplaced decorator, right away
    _SET_UP[app] = integration
    if ClientDisconnected not in app.exception_handlers:
        app.add_exception_handler(ClientDisconnected, QUIET_HANDLER)
    if on_stop is not None:
        set_hook(app, on_stop)
    previous_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        integration.follow()  # routes added since are marked before the schema is built
        return previous_openapi()

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override


class _AppCancellation:
    """Guards and marks the app's routes; follows the routes added later."""

    def __init__(
        self,
        app: FastAPI,
        methods: frozenset[str],
        options: CancelOptions,
        tag: str | None,
        *,
        websockets: bool = False,
    ) -> None:
        self._app = weakref.ref(app)
        self.websockets = websockets
        self._methods = methods
        self._options = options
        self._tag = tag
        self._routers: list[Any] = []  # the app's router and every router it includes
        self._stamp: tuple[int, ...] | None = None
        # The routes taken, by id; held, so that an id is never reused while the app lives.
        self._seen: dict[int, APIRoute] = {}

    def follow(self) -> None:
        """Guard and mark the routes added since the last call (a cheap check if none)."""
        app = self._app()
        if app is None:
            return
        stamp = routes_stamp(self._routers)
        if stamp is not None and stamp == self._stamp:
            return
        routers: list[Any] = [app.router]
        marked = False
        for route in api_routes(app.router.routes, routers):
            if id(route) in self._seen:
                continue
            self._seen[id(route)] = route
            marked |= self._take(route)
        self._routers = routers
        self._stamp = routes_stamp(routers)
        if marked:
            app.openapi_schema = None  # rebuilt with the marks

    def _take(self, route: APIRoute) -> bool:
        """Guard ``route`` where the policy says so and mark what is guarded, by any entry."""
        check_placement(route.endpoint)
        served = frozenset(route.methods or ())
        policy = policy_of(route.endpoint)
        if isinstance(route, CancellableRoute):
            guarded = route.cancelled_methods  # its router's policy, applied by itself
        else:
            guarded = self._guard(route, served, policy)
        if (policy is None or not policy.enabled) and depends_on_cancel_ctx(route.dependant):
            guarded = served  # the dependency guards every method of the route itself
        if not guarded:
            return False
        if is_marked(route):  # by its route class
            if self._tag is None or self._tag in route.tags:
                return False
            route.tags = [*route.tags, self._tag]
            return True
        mark_operation(route, guarded, tag=self._tag)
        return True

    def _guard(
        self, route: APIRoute, served: frozenset[str], policy: CancelPolicy | None
    ) -> frozenset[str]:
        """Run ``route``'s requests of the guarded methods in a guard; return those methods."""
        options = self._options
        if policy is None:
            guarded = served & self._methods
        else:
            guarded = policy.methods_for(served)
            if policy.options != DEFAULTS:
                options = policy.options
        if guarded:
            route.handle = guard_route(route.handle, guarded, options)  # type: ignore[method-assign,assignment]
        return guarded


class _FollowRoutes:
    """Pure ASGI middleware: before a request is routed, take the routes added meanwhile."""

    def __init__(self, app: ASGIApp, integration: _AppCancellation) -> None:
        self.app = app
        self._follow: Callable[[], None] = integration.follow
        # With websockets=True every websocket session of the app runs in a guard, from
        # here: FastAPI builds the routes of included routers anew, out of reach.
        self._sessions = (
            guard_websocket_app(app, integration._options) if integration.websockets else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            self._follow()
        elif kind == "websocket":
            self._follow()
            await self._sessions(scope, receive, send)
            return
        await self.app(scope, receive, send)
