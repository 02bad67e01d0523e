"""``@cancellable``: make one endpoint cancellable without touching its signature."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, TypeVar, overload

from fastapi import Depends, Request, params

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._dependency import CancelCtx, cancel_ctx, dependency_for
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._fastapi import (
    exit_stacks,
    is_coroutine_callable,
    is_generator_callable,
    request_send,
)
from fastapi_hangup._guard import SCOPE_KEY, RequestGuard
from fastapi_hangup._openapi import with_note
from fastapi_hangup._options import DEFAULTS, CancelOptions
from fastapi_hangup._policy import (
    CancelPolicy,
    mark,
    mark_wrapped,
    normalize_methods,
    policy_of,
)
from fastapi_hangup._quiet import answer_middleware
from fastapi_hangup._ws_entry import reject_websocket_endpoint

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# FastAPI hands a parameter annotated with Request to the endpoint without solving anything,
# so this hidden parameter costs nothing; the wrapper pops it before calling the endpoint.
_REQUEST_PARAM = "fastapi_hangup_request__"
# A sync endpoint runs in FastAPI's worker thread, so its guard is the dependency's, solved on
# the event loop: the wrapper stays sync, and FastAPI runs (and traces) it as it would the
# endpoint itself.
_CTX_PARAM = "fastapi_hangup_ctx__"


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

    On a router whose ``route_class`` is [`CancellableRoute`][fastapi_hangup.CancellableRoute] the
    whole request is covered (dependencies, streaming bodies); there, ``@cancellable`` opts a route
    in (also for unsafe methods) and ``@cancellable(False)`` opts it out.

    Args:
        func_or_enabled: the endpoint (bare ``@cancellable``), or ``False`` to opt the
            endpoint out of its router's policy (``@cancellable(False)``).
        methods: cancel only requests with these methods (default: every method of the route,
            unsafe ones included, since the decorator is an explicit opt-in).
        deadline: a time budget in seconds; see [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        grace: seconds between noticing a hang-up and delivering the cancellation.
        deadline_header: honour an inbound deadline header; see
            [`cancel_ctx_with`][fastapi_hangup.cancel_ctx_with].
        callback_timeout: the default time limit of ``on_cancel`` callbacks.

    Placed above the route decorator it cannot work (the route was registered with the
    undecorated function); [`document_cancellation`][fastapi_hangup.document_cancellation] then
    fails with a ``TypeError`` that says so.

    The decorated endpoint keeps its type: called directly (in a unit test), it simply runs.
    FastAPI's own rules decide whether it is async, sync or a stream, so an endpoint behind
    another ``functools.wraps`` decorator, or an object with an ``async __call__``, is
    handled exactly as FastAPI handles it.
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
    if not policy.enabled:
        mark(func, policy)  # only a CancellableRoute reads it: nothing else to opt out of
        return func
    if policy_of(func) is not None or _REQUEST_PARAM in _parameters(func):
        raise TypeError(f"@cancellable was applied twice to {_name(func)}")
    reject_websocket_endpoint(func, _name(func))
    if is_generator_callable(func):
        wrapper, hidden = _streaming_wrapper(func, policy), _request_parameter()
    elif is_coroutine_callable(func):
        wrapper, hidden = _endpoint_wrapper(func, policy), _request_parameter()
    else:
        wrapper, hidden = _sync_wrapper(func), _ctx_parameter(policy)
    functools.update_wrapper(wrapper, func)
    wrapper.__doc__ = with_note(func.__doc__)  # how a plain router's OpenAPI shows it
    wrapper.__signature__ = _signature_with(func, hidden, policy.options)  # type: ignore[attr-defined]
    mark(wrapper, policy)
    mark_wrapped(func)
    return wrapper  # type: ignore[return-value]


def _endpoint_wrapper(
    func: Callable[..., Awaitable[T]], policy: CancelPolicy
) -> Callable[..., Awaitable[T]]:
    own = _request_param(func)
    methods, options = policy.methods, policy.options

    async def endpoint(*args: Any, **kwargs: Any) -> T:
        request: Request | None = kwargs.get(own) if own else kwargs.pop(_REQUEST_PARAM, None)
        if request is None or (methods is not None and request.method not in methods):
            return await func(*args, **kwargs)  # called directly, or a method not guarded
        scope = request.scope
        if scope.get(SCOPE_KEY) is not None:  # the route class or the dependency guards it
            return await func(*args, **kwargs)
        guard = RequestGuard(scope, request.receive, options, request)
        guard.enter()  # the guard's protocol (see _guard.py), here without a coroutine of its own
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            cause = await guard.leave(exc)
            if cause is None:
                if isinstance(exc, (ClientDisconnected, DeadlineExceeded)):
                    await _abandoned(guard, request, exc)
                raise
            error = guard.ending_error(cause)
        else:
            cause = await guard.leave(None)
            if cause is None:
                return result
            error = guard.ending_error(cause)
        await _abandoned(guard, request, error)
        raise error from None

    return endpoint


async def _abandoned(guard: RequestGuard, request: Request, error: Exception) -> None:
    """The guard of a ``@cancellable`` endpoint ends the request with ``error``."""
    scope = request.scope
    stacks = exit_stacks(scope)
    if stacks is not None:  # unwrap it if a dependency's task group wraps it on its way
        stacks[0].push(functools.partial(_unwrap, guard))
    if isinstance(error, ClientDisconnected):
        await answer_middleware(scope, request.receive, request_send(request))


def _unwrap(guard: RequestGuard, exc_type: object, exc: BaseException | None, tb: object) -> bool:
    ending = guard.unwrapped(exc)
    if ending is not None:
        raise ending
    return False


def _sync_wrapper(func: Callable[..., T]) -> Callable[..., T]:
    def endpoint(*args: Any, **kwargs: Any) -> T:
        kwargs.pop(_CTX_PARAM, None)  # the dependency guards the request; nothing to do here
        return func(*args, **kwargs)

    return endpoint


def _streaming_wrapper(func: Callable[..., T], policy: CancelPolicy) -> Callable[..., T]:
    # FastAPI still sees a generator endpoint (it unwraps __wrapped__). Its body is streamed
    # after the endpoint function returns, which only the route class can guard; on a plain
    # router Starlette's own disconnect listener stops the stream, as without the decorator.
    own = _request_param(func)

    def endpoint(*args: Any, **kwargs: Any) -> T:
        if not own:
            kwargs.pop(_REQUEST_PARAM, None)
        return func(*args, **kwargs)

    return endpoint


def _request_parameter() -> inspect.Parameter:
    return inspect.Parameter(_REQUEST_PARAM, inspect.Parameter.KEYWORD_ONLY, annotation=Request)


def _ctx_parameter(policy: CancelPolicy) -> inspect.Parameter:
    dependency = dependency_for(policy.options, policy.methods)
    return inspect.Parameter(
        _CTX_PARAM,
        inspect.Parameter.KEYWORD_ONLY,
        default=None,
        annotation=Annotated[CancelOnDisconnect, Depends(dependency)],
    )


def _signature_with(
    func: Callable[..., Any], hidden: inspect.Parameter, options: CancelOptions
) -> inspect.Signature:
    signature = inspect.signature(func)
    hints = _type_hints(func)
    # A `ctx: CancelCtx` parameter is solved before the endpoint runs, so it must carry the
    # decorator's settings itself.
    params = [_with_options(p, hints.get(p.name), options) for p in signature.parameters.values()]
    if hidden.name == _REQUEST_PARAM and _request_param(func) is not None:
        return signature.replace(parameters=params)  # the endpoint's own Request is shared
    at = len(params)
    if params and params[-1].kind is inspect.Parameter.VAR_KEYWORD:
        at -= 1
    params.insert(at, hidden)
    return signature.replace(parameters=params)


def _with_options(param: inspect.Parameter, hint: Any, options: CancelOptions) -> inspect.Parameter:
    if options == DEFAULTS:
        return param
    if hint is CancelCtx or _is_ctx_annotation(hint):
        configured = Annotated[CancelOnDisconnect, Depends(dependency_for(options))]
        return param.replace(annotation=configured)
    default = param.default
    if isinstance(default, params.Depends) and default.dependency is cancel_ctx:
        return param.replace(default=Depends(dependency_for(options)))
    return param


def _is_ctx_annotation(hint: Any) -> bool:
    if typing.get_origin(hint) is not Annotated:
        return False
    return any(
        isinstance(extra, params.Depends) and extra.dependency is cancel_ctx
        for extra in hint.__metadata__
    )


def _request_param(func: Callable[..., Any]) -> str | None:
    """The endpoint's own ``Request`` parameter: FastAPI fills only one, so we share it."""
    hints = _type_hints(func)
    for name in _parameters(func):
        hint = hints.get(name)
        if isinstance(hint, type) and issubclass(hint, Request):
            return name
    return None


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """The endpoint's parameter annotations, resolved where they are strings.

    ``from __future__ import annotations`` turns every annotation into a string; they are
    resolved the way ``typing.get_type_hints`` does. One that resolves only later is left out.
    """
    hints = {name: param.annotation for name, param in _parameters(func).items()}
    if any(isinstance(hint, str) for hint in hints.values()):
        target = func if inspect.isroutine(func) else getattr(func, "__call__", func)  # noqa: B004
        try:
            resolved = typing.get_type_hints(inspect.unwrap(target), include_extras=True)
        except Exception:  # a name defined later (or never): keep what is not a string
            resolved = {}
        hints = {name: resolved.get(name, hint) for name, hint in hints.items()}
    return {name: hint for name, hint in hints.items() if not isinstance(hint, str)}


def _parameters(func: Callable[..., Any]) -> typing.Mapping[str, inspect.Parameter]:
    return inspect.signature(func).parameters


def _name(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)
