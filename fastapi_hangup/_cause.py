"""Why a request's work was cancelled."""

from __future__ import annotations

from enum import Enum


class CancelCause(Enum):
    """Why the context was cancelled; ``ctx.cause`` is ``None`` while the request is alive."""

    CLIENT_DISCONNECTED = "client_disconnected"
    """The client hung up before the response was complete."""
    DEADLINE_EXCEEDED = "deadline_exceeded"
    """The route's time budget (or the client's shorter one) ran out."""
    SERVER_SHUTDOWN = "server_shutdown"
    """The server cancelled the request from outside, e.g. while shutting down (best effort)."""
