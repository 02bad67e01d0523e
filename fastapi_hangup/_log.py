"""The one log record of a request whose work was stopped."""

from __future__ import annotations

import logging

from starlette.types import Scope

from fastapi_hangup._cause import CancelCause

logger = logging.getLogger("fastapi_hangup")


def log_stopped(
    scope: Scope, cause: CancelCause, status: int, reason: str, ran: float, left: float | None
) -> None:
    """Log ``GET /route 499 Client Closed Request: work stopped after 1010.4 ms (...)``.

    Servers log nothing useful for an abandoned request (uvicorn and daphne write no access
    line at all), so this record is the trace it leaves. ``ran`` is how long the work ran,
    until it had unwound (a shielded block included); ``left`` is when the client hung up,
    both in seconds from the start of the guarded work. Its ``extra`` attributes
    (``method``, ``route``, ``status_code``, ``duration_ms``, ``hang_up_ms``, ``cause``) suit
    structured logging.
    """
    route = getattr(scope.get("route"), "path", None) or scope.get("path", "?")
    ran_ms = ran * 1000
    left_ms = None if left is None else left * 1000
    when = "" if left_ms is None else f" (the client left after {left_ms:.1f} ms)"
    logger.info(
        "%s %s %d %s: work stopped after %.1f ms%s",
        scope.get("method", "?"),
        route,
        status,
        reason,
        ran_ms,
        when,
        extra={
            "method": scope.get("method"),
            "route": route,
            "status_code": status,
            "duration_ms": ran_ms,
            "hang_up_ms": left_ms,
            "cause": cause.value,
        },
    )
