"""Which requests of a route are cancelled: the method policy and the per-endpoint mark."""

from __future__ import annotations

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
"""Every HTTP method: pass it to :func:`cancellable_route` to cancel writes too."""

_MARK = "__fastapi_hangup_policy__"


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


def policy_of(endpoint: Callable[..., Any]) -> CancelPolicy | None:
    """The policy ``@cancellable`` put on an endpoint, if any."""
    policy = getattr(endpoint, _MARK, None)
    return policy if isinstance(policy, CancelPolicy) else None
