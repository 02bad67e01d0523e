"""The one log record of a request whose work was stopped."""

from __future__ import annotations

import logging

from starlette.types import Scope

from fastapi_hangup._cause import CancelCause

logger = logging.getLogger("fastapi_hangup")


def log_stopped(scope: Scope, cause: CancelCause, status: int, reason: str, ran: float) -> None:
    """Log ``GET /route 499 Client Closed Request: work stopped after 212.4 ms``.

    Servers log nothing useful for an abandoned request (uvicorn and daphne write no access
    line at all), so this record is the trace it leaves. Its ``extra`` attributes (``method``,
    ``route``, ``status_code``, ``duration_ms``, ``cause``) suit structured logging.
    """
    route = getattr(scope.get("route"), "path", None) or scope.get("path", "?")
    ran_ms = ran * 1000
    logger.info(
        "%s %s %d %s: work stopped after %.1f ms",
        scope.get("method", "?"),
        route,
        status,
        reason,
        ran_ms,
        extra={
            "method": scope.get("method"),
            "route": route,
            "status_code": status,
            "duration_ms": ran_ms,
            "cause": cause.value,
        },
    )
