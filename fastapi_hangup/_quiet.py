"""What an abandoned request sends: nothing, except where a middleware waits for a response."""

from __future__ import annotations

from typing import cast

import anyio
from fastapi import Request, Response
from starlette.types import ExceptionHandler, Receive, Scope, Send

from fastapi_hangup._fastapi import behind_base_http_middleware


async def send_nothing(request: Request, exc: Exception) -> None:
    """Handle [`ClientDisconnected`][fastapi_hangup.ClientDisconnected]: the client is gone.

    Nothing is sent.

    The log record was written when the work stopped.
    """


# Starlette's type asks handlers for a Response; returning None (send nothing) is allowed.
QUIET_HANDLER = cast(ExceptionHandler, send_nothing)


async def answer_middleware(scope: Scope, receive: Receive, send: Send) -> None:
    """Send an empty 499 if an ``@app.middleware("http")`` waits for a response.

    ``BaseHTTPMiddleware``'s ``call_next`` raises "No response returned." when the app sends
    nothing, whatever handler ran; so behind one the abandoned request gets a 499 nobody reads.
    """
    if behind_base_http_middleware(scope):
        await ClientClosedResponse()(scope, receive, send)


class ClientClosedResponse(Response):
    """An empty 499 response whose sending gives up after a second.

    After a hang-up a send can block for ever (hypercorn over HTTP/2 on a closed connection),
    so it is bounded; and it is only sent where something waits for it.
    """

    def __init__(self) -> None:
        super().__init__(status_code=499)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.move_on_after(1.0):
            await super().__call__(scope, receive, send)
