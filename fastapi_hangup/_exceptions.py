"""Exceptions that name what happened to a request."""

from __future__ import annotations

from starlette.exceptions import HTTPException


class ClientDisconnected(Exception):
    """The client hung up before the response was complete, so the work was stopped.

    The handler itself sees the backend's cancellation exception at its next ``await``; this
    exception is what the rest of the request (yield dependencies entered before
    ``cancel_ctx``, exception handlers) sees afterwards, and what ``ctx.check()`` raises in a
    worker thread. fastapi-hangup registers a quiet handler for it that sends nothing,
    because nobody is left to read a response.
    """

    def __init__(self, message: str = "the client hung up before the response was complete"):
        super().__init__(message)


class DeadlineExceeded(HTTPException):
    """The request's time budget ran out while the client was still waiting.

    It is an ``HTTPException`` with status 504, so FastAPI answers
    ``{"detail": "Deadline exceeded: ..."}``. Register a handler for it
    (``app.exception_handler(DeadlineExceeded)``) to answer differently.
    """

    def __init__(self, budget: float) -> None:
        super().__init__(
            status_code=504,
            detail=f"Deadline exceeded: the request took longer than its {budget:g} s budget",
        )
        self.budget = budget
