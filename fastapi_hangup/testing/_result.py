"""What one request did, and the two assertions a hang-up test makes about it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from starlette.types import Message

from fastapi_hangup._cause import CancelCause
from fastapi_hangup._context import CancelOnDisconnect


@dataclass
class RequestResult:
    """What one request did, seen from the client's side of the ASGI connection.

    [`HangUpClient`][fastapi_hangup.testing.HangUpClient] returns one;
    [`HangUpTransport`][fastapi_hangup.testing.HangUpTransport] keeps one per request in
    ``transport.requests`` (the latest is ``transport.last_request``), so an httpx test that
    abandoned its request can still see what became of the work.
    """

    method: str = ""
    """The request's method."""
    path: str = ""
    """The request's path (without the query string)."""
    messages: list[Message] = field(default_factory=list)
    """Every message the app sent, in order."""
    hung_up: bool = False
    """Whether the client hung up before the response was complete."""
    hung_up_at: float | None = None
    """``time.monotonic()`` when the client hung up."""
    sent_after_hang_up: list[Message] = field(default_factory=list)
    """Messages the app sent after its ``receive()`` reported the hang-up (a clean
    cancellation sends none)."""
    context: CancelOnDisconnect | None = None
    """The request's cancellation context, if a guarded route created one."""
    log_records: list[logging.LogRecord] = field(default_factory=list)
    """The ``fastapi_hangup`` log records of this request (one if its work was stopped)."""
    finished: bool = False
    """Whether the app has returned (or raised)."""
    elapsed: float = 0.0
    """Seconds from the start of the request until the app returned."""

    @property
    def status_code(self) -> int | None:
        """The response status, or ``None`` if the app never started a response."""
        start = self.start_message
        return None if start is None else int(start["status"])

    @property
    def headers(self) -> dict[str, str]:
        """The response headers (last value wins), decoded as latin-1."""
        start = self.start_message
        if start is None:
            return {}
        return {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}

    @property
    def start_message(self) -> Message | None:
        """The ``http.response.start`` message, if the app sent one."""
        return next((m for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        """The response body the app sent (also what it sent after a hang-up)."""
        return b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )

    @property
    def complete(self) -> bool:
        """Whether the app sent a complete response."""
        return any(
            m["type"] == "http.response.body" and not m.get("more_body", False)
            for m in self.messages
        )

    @property
    def cancelled(self) -> bool:
        """Whether the guarded endpoint's work was cancelled (hang-up, deadline, ...)."""
        return self.context is not None and self.context.is_cancelled

    @property
    def cause(self) -> CancelCause | None:
        """Why the work was cancelled, or ``None`` (also when no guarded route ran)."""
        return None if self.context is None else self.context.cause


def assert_cancelled(
    result: RequestResult, cause: CancelCause = CancelCause.CLIENT_DISCONNECTED
) -> None:
    """Assert that the guarded endpoint was cancelled, for ``cause``, and ended cleanly.

    Cleanly means: after a hang-up, nothing was sent to the departed client (but the empty
    499 that an ``@app.middleware("http")`` needs); after a deadline, the client got the 504.

    Raises:
        AssertionError: naming what differed.
    """
    if result.context is None:
        raise AssertionError(
            "no cancellation context was created: is the route guarded (ctx: CancelCtx, "
            "@cancellable or CancellableRoute), and did the request reach it?"
        )
    if result.cause is not cause:
        raise AssertionError(f"expected the work to be cancelled for {cause}, got {result.cause}")
    sent = result.sent_after_hang_up
    if cause is CancelCause.CLIENT_DISCONNECTED and sent and not _is_middleware_answer(sent):
        raise AssertionError(f"the app sent after the hang-up: {sent}")
    if cause is CancelCause.DEADLINE_EXCEEDED and result.status_code not in (None, 504):
        raise AssertionError(f"expected a 504 after the deadline, got {result.status_code}")


def _is_middleware_answer(messages: list[Message]) -> bool:
    # Behind @app.middleware("http") the abandoned request answers an empty 499, because
    # BaseHTTPMiddleware fails when the app sends nothing; nobody reads it.
    return (
        len(messages) == 2
        and messages[0]["type"] == "http.response.start"
        and messages[0]["status"] == 499
        and messages[1]["type"] == "http.response.body"
        and not messages[1].get("body")
        and not messages[1].get("more_body", False)
    )


def assert_not_cancelled(result: RequestResult) -> None:
    """Assert that the request's work ran to its end (or was never guarded).

    Raises:
        AssertionError: if the work was cancelled, saying why.
    """
    if result.cancelled:
        raise AssertionError(f"the work was cancelled: {result.cause}")
