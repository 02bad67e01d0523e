"""Which requests of a route are cancelled: the method policy and the per-endpoint mark."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi_hangup._options import DEFAULTS, CancelOptions

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "QUERY"})
"""Methods a router-wide policy cancels by default: they only read, so stopping them is free.

Unsafe methods (POST, PUT, PATCH, DELETE) write. A write cancelled half-way can leave state
half-written, so they are cancelled only where you opt in, per route or per router.
"""

ALL_METHODS = frozenset(
    {"GET", "HEAD", "OPTIONS", "QUERY", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT"}
)
"""Every HTTP method.

Pass it to [`cancellable_route`][fastapi_hangup.cancellable_route] to cancel writes too.
"""

_MARK = "__fastapi_hangup_policy__"
_WRAPPED_MARK = "__fastapi_hangup_wrapped__"
DEPENDENCY_MARK = "__fastapi_hangup_dependency__"
"""Set on ``cancel_ctx`` and on every dependency ``cancel_ctx_with`` makes."""


@dataclass(frozen=True)
class CancelPolicy:
    """What ``@cancellable`` asked for one endpoint."""

    enabled: bool
    methods: frozenset[str] | None  # None: every method the route serves
    options: CancelOptions = DEFAULTS

    def methods_for(self, route_methods: Iterable[str]) -> frozenset[str]:
        """The route's methods this policy cancels."""
        if not self.enabled:
            return frozenset()
        served = frozenset(m.upper() for m in route_methods)
        return served if self.methods is None else served & self.methods


def normalize_methods(methods: Iterable[str], *, what: str) -> frozenset[str]:
    """Upper-case ``methods`` and reject what is not an HTTP method, naming ``what``."""
    if isinstance(methods, str):
        raise TypeError(f"{what} takes a collection of methods, e.g. {{'GET'}}, not {methods!r}")
    normalized = frozenset(m.upper() for m in methods)
    unknown = normalized - ALL_METHODS
    if unknown:
        raise ValueError(f"{what} got unknown HTTP methods {sorted(unknown)}")
    return normalized


def mark(func: Callable[..., Any], policy: CancelPolicy) -> None:
    """Remember ``policy`` on an endpoint function."""
    setattr(func, _MARK, policy)


def mark_wrapped(func: Callable[..., Any]) -> None:
    """Remember on the undecorated function that ``@cancellable`` wrapped it.

    A route whose endpoint is such a function was registered before the decorator ran:
    ``@cancellable`` sat above the route decorator, where it cannot work.
    """
    with contextlib.suppress(AttributeError, TypeError):  # a slotted callable: can't tell
        setattr(func, _WRAPPED_MARK, True)


def check_placement(endpoint: Callable[..., Any]) -> None:
    """Fail if ``endpoint`` is a function ``@cancellable`` wrapped only after its route was made.

    Raises:
        TypeError: naming the endpoint and the fix.
    """
    if getattr(endpoint, _WRAPPED_MARK, False) is True and policy_of(endpoint) is None:
        name = getattr(endpoint, "__qualname__", repr(endpoint))
        raise TypeError(
            f"@cancellable is above the route decorator of {name}, so the route was "
            "registered without it. Put @cancellable directly under @app.get(...) "
            "(or @router.post(...), ...), next to the function."
        )


def policy_of(endpoint: Callable[..., Any]) -> CancelPolicy | None:
    """The policy ``@cancellable`` put on an endpoint, if any."""
    policy = getattr(endpoint, _MARK, None)
    return policy if isinstance(policy, CancelPolicy) else None


def is_cancel_dependency(call: Any) -> bool:
    """Whether ``call`` is ``cancel_ctx`` or made by ``cancel_ctx_with``."""
    return getattr(call, DEPENDENCY_MARK, False) is True
