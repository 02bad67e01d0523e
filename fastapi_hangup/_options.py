"""Per-route settings: time budget, grace period, inbound deadline header."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from starlette.types import Scope

DEFAULT_DEADLINE_HEADER = "x-envoy-expected-rq-timeout-ms"
"""The inbound deadline header honoured when you pass ``deadline_header=True``.

Envoy sets it on every request it proxies, to tell the upstream how long it will wait
(``x-envoy-expected-rq-timeout-ms: 1500``): a relative budget in milliseconds, like gRPC's
``grpc-timeout``, so clock skew between hosts does not matter.
"""

_MILLISECONDS = re.compile(rb"[0-9]{1,9}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class CancelOptions:
    """How one route's context behaves; built and checked once, when the route is defined."""

    deadline: float | None = None
    grace: float = 0.0
    deadline_header: bytes | None = None
    callback_timeout: float = 5.0

    @classmethod
    def build(
        cls,
        *,
        deadline: float | None = None,
        grace: float = 0.0,
        deadline_header: str | bool | None = None,
        callback_timeout: float = 5.0,
    ) -> CancelOptions:
        """Check the settings and return them; every mistake is reported here, not per request."""
        if deadline is not None and not (0 < deadline < math.inf):
            raise ValueError(f"deadline must be a positive number of seconds, not {deadline!r}")
        if not (0 <= grace < math.inf):
            raise ValueError(f"grace must be zero or a positive number of seconds, not {grace!r}")
        if not (0 < callback_timeout < math.inf):
            raise ValueError(
                f"callback_timeout must be a positive number of seconds, not {callback_timeout!r}"
            )
        header = DEFAULT_DEADLINE_HEADER if deadline_header is True else deadline_header or None
        if header is not None and not _TOKEN.fullmatch(header):
            raise ValueError(f"deadline_header {header!r} is not a valid HTTP header name")
        return cls(
            deadline=deadline,
            grace=grace,
            deadline_header=header.lower().encode("latin-1") if header else None,
            callback_timeout=callback_timeout,
        )

    def budget(self, scope: Scope) -> float | None:
        """The request's time budget: the route's, or the client's if that is shorter.

        The header must be a positive whole number of milliseconds (at most 9 digits). Any
        other value (empty, negative, fractional, huge, repeated headers that disagree) is
        ignored: a client may only shorten the server's budget, and a bad header cannot.
        """
        if self.deadline_header is None:
            return self.deadline
        name = self.deadline_header
        values = {v.strip() for k, v in scope.get("headers", ()) if k.lower() == name}
        if len(values) != 1:
            return self.deadline
        (value,) = values
        if not _MILLISECONDS.fullmatch(value) or int(value) == 0:
            return self.deadline
        asked = int(value) / 1000
        return asked if self.deadline is None else min(asked, self.deadline)


DEFAULTS = CancelOptions()
