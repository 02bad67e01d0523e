"""Exceptions that name what happened to a request."""

from __future__ import annotations


class ClientDisconnected(Exception):
    """The client hung up before the response was complete, so the work was stopped.

    The handler itself sees the backend's cancellation exception at its next ``await``; this
    exception is what the rest of the request (yield dependencies entered before
    ``cancel_ctx``, exception handlers) sees afterwards. fastapi-hangup registers a quiet
    handler for it that sends nothing, because nobody is left to read a response.
    """

    def __init__(self, message: str = "the client disconnected before the response was complete"):
        super().__init__(message)
