"""``@cancellable``: make one endpoint cancellable without touching its signature."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar, overload

from fastapi import Depends, Request, params
from starlette.concurrency import run_in_threadpool

from fastapi_hangup._context import SCOPE_KEY, CancelOnDisconnect
from fastapi_hangup._dependency import CancelCtx, cancel_ctx, dependency_for
from fastapi_hangup._guard import call_guarded
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import CancelPolicy, mark, normalize_methods, policy_of

F = TypeVar("F", bound=Callable[..., Any])

# FastAPI hands a parameter annotated with Request to the endpoint without solving anything,
# so this hidden parameter costs nothing; the wrapper pops it before calling the endpoint.
_REQUEST_PARAM = "fastapi_hangup_request__"
_ROUTE_DECORATORS = frozenset(
    {"get", "post", "put", "patch", "delete", "head", "options", "trace", "query", "api_route"}
)


@overload
def cancellable(func: F, /) -> F: ...
@overload
def cancellable(
    enabled: bool = True,
    /,
    *,
    methods: Iterable[str] | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
) -> Callable[[F], F]: ...
def cancellable(
    func_or_enabled: Any = True,
    /,
    *,
    methods: Iterable[str] | None = None,
    deadline: float | None = None,
    grace: float = 0.0,
    deadline_header: str | bool | None = None,
    callback_timeout: float = 5.0,
) -> Any:
    """Make an endpoint cancellable when its client hangs up.

    Place it *under* the route decorator::

        @app.get("/report")
        @cancellable
        async def report() -> Report: ...

    The endpoint's work then runs in a cancel scope that a hang-up cancels, exactly as with
    ``Depends(cancel_ctx)``; the endpoint may still declare ``ctx: CancelCtx`` to read the
    context. Sync endpoints run in a worker thread and stop cooperatively: they declare
    ``ctx: CancelCtx`` and check ``ctx.is_cancelled``.

    On a router whose ``route_class`` is :class:`CancellableRoute` the whole request is
    covered (dependencies, streaming bodies); there, ``@cancellable`` opts a route in (also
    for unsafe methods) and ``@cancellable(False)`` opts it out.

    Args:
        func_or_enabled: the endpoint (bare ``@cancellable``), or ``False`` to opt the
            endpoint out of its router's policy (``@cancellable(False)``).
        methods: cancel only requests with these methods (default: every method of the route,
            unsafe ones included, since the decorator is an explicit opt-in).
        deadline: a time budget in seconds; see :func:`cancel_ctx_with`.
        grace: seconds between noticing a hang-up and delivering the cancellation.
        deadline_header: honour an inbound deadline header; see :func:`cancel_ctx_with`.
        callback_timeout: the default time limit of ``on_cancel`` callbacks.

    Raises:
        TypeError: if it is placed above the route decorator, where it could not work.
    """
    if callable(func_or_enabled):
        return _decorate(func_or_enabled, CancelPolicy(enabled=True, methods=None))
    if not isinstance(func_or_enabled, bool):
        raise TypeError(
            f"@cancellable takes an endpoint or a bool, not {func_or_enabled!r}; "
            "use @cancellable, @cancellable(False) or @cancellable(methods={'GET'})."
        )
    policy = CancelPolicy(
        enabled=func_or_enabled,
        methods=None if methods is None else normalize_methods(methods, what="@cancellable"),
        options=CancelOptions.build(
            deadline=deadline,
            grace=grace,
            deadline_header=deadline_header,
            callback_timeout=callback_timeout,
        ),
    )
    return lambda func: _decorate(func, policy)


def _decorate(func: F, policy: CancelPolicy) -> F:
    _check_placement(func)
    if not policy.enabled:
        mark(func, policy)  # only a CancellableRoute reads it: nothing else to opt out of
        return func
    if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
        wrapper = _streaming_wrapper(func, policy)
    else:
        wrapper = _endpoint_wrapper(func, policy)
    functools.update_wrapper(wrapper, func)
    wrapper.__signature__ = _with_request_param(func, policy.options)  # type: ignore[attr-defined]
    mark(wrapper, policy)
    return wrapper  # type: ignore[return-value]


def _request_param(func: Callable[..., Any]) -> str | None:
    """The endpoint's own ``Request`` parameter: FastAPI fills only one, so we share it."""
    try:
        signature = inspect.signature(func, eval_str=True)
    except (NameError, TypeError):  # an annotation that only resolves later: check by name
        signature = inspect.signature(func)
    for param in signature.parameters.values():
        annotation = param.annotation
        if annotation == "Request" or (
            isinstance(annotation, type) and issubclass(annotation, Request)
        ):
            return param.name
    return None


def _endpoint_wrapper(func: Callable[..., Any], policy: CancelPolicy) -> Callable[..., Any]:
    is_async = inspect.iscoroutinefunction(func)
    own = _request_param(func)

    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs[own] if own else kwargs.pop(_REQUEST_PARAM)
        if is_async:
            call = functools.partial(func, *args, **kwargs)
        else:  # what FastAPI itself does with a sync endpoint
            call = functools.partial(run_in_threadpool, func, *args, **kwargs)
        if policy.methods is not None and request.method not in policy.methods:
            return await call()
        return await call_guarded(request, call, policy.options)

    return endpoint


def _streaming_wrapper(func: Callable[..., Any], policy: CancelPolicy) -> Callable[..., Any]:
    # FastAPI still sees a generator endpoint (it unwraps __wrapped__); the body is streamed
    # after the endpoint function returns, which only the route class can cover.
    own = _request_param(func)

    def endpoint(*args: Any, **kwargs: Any) -> Any:
        request: Request = kwargs[own] if own else kwargs.pop(_REQUEST_PARAM)
        wanted = policy.methods is None or request.method in policy.methods
        ctx = request.scope.get(SCOPE_KEY)
        if wanted and not (ctx is not None and ctx.covers_response):
            raise TypeError(
                f"@cancellable on the streaming endpoint {func.__qualname__} needs the route "
                "class: its body is sent after the endpoint function returns, so only a "
                "route-level guard can stop it. Create the router with "
                "APIRouter(route_class=CancellableRoute)."
            )
        return func(*args, **kwargs)

    return endpoint


def _with_request_param(func: Callable[..., Any], options: CancelOptions) -> inspect.Signature:
    signature = inspect.signature(func)
    # A `ctx: CancelCtx` parameter is solved before the endpoint runs, so it must carry the
    # decorator's settings itself.
    params = [_with_options(p, options) for p in signature.parameters.values()]
    if _REQUEST_PARAM in signature.parameters or policy_of(func) is not None:
        raise TypeError(f"@cancellable was applied twice to {func.__qualname__}")
    if _request_param(func) is not None:
        return signature.replace(parameters=params)
    hidden = inspect.Parameter(_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
    at = len(params)
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    params.insert(at, hidden)
    return signature.replace(parameters=params)


def _with_options(param: inspect.Parameter, options: CancelOptions) -> inspect.Parameter:
    if options == DEFAULTS:
        return param
    if param.annotation is CancelCtx or param.annotation == "CancelCtx":
        configured = Annotated[CancelOnDisconnect, Depends(dependency_for(options))]
        return param.replace(annotation=configured)
    default = param.default
    if isinstance(default, params.Depends) and default.dependency is cancel_ctx:
        return param.replace(default=Depends(dependency_for(options)))
    return param


def _check_placement(func: Callable[..., Any]) -> None:
    """Fail if ``@cancellable`` sits above the route decorator, where it would do nothing.

    Python applies decorators bottom-up, so a route decorator below ours has registered the
    undecorated function already. The decorator list in the source tells.
    """
    try:
        source = textwrap.dedent(inspect.getsource(func))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):  # no source (REPL, exec): can't tell
        return
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return
    names = [_decorator_name(d) for d in node.decorator_list]
    if "cancellable" not in names:
        return
    ours = names.index("cancellable")
    if any(name in _ROUTE_DECORATORS for name in names[ours + 1 :]):
        raise TypeError(
            f"@cancellable is above the route decorator of {func.__qualname__}, so the route "
            "was registered without it. Put @cancellable directly under @app.get(...) "
            "(or @router.post(...), ...), next to the function."
        )


def _decorator_name(node: ast.expr) -> str:
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return ""
