"""Hang up on your own app in tests: in-process, on asyncio and trio, no server needed.

Starlette's ``TestClient`` and httpx's ``ASGITransport`` only send ``http.disconnect`` after
the response is complete, so they cannot show what your endpoint does when a client goes away
mid-request. [`HangUpTransport`][fastapi_hangup.testing.HangUpTransport] makes an ordinary
``httpx.AsyncClient`` hang up when the test gives up on a request::

    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        with pytest.raises(TimeoutError), anyio.fail_after(0.1):
            await client.get("/report")
    assert_cancelled(transport.last_request)

[`HangUpClient`][fastapi_hangup.testing.HangUpClient] does the same in one call, with hang-ups only
the server side can time (after N body chunks, once the work has started).
[`HangUpWebSocket`][fastapi_hangup.testing.HangUpWebSocket] talks to a websocket endpoint and
closes (or drops) the connection while the endpoint works.
"""

from fastapi_hangup.testing import _exchange
from fastapi_hangup.testing._client import HangUpClient
from fastapi_hangup.testing._lifespan import LifespanFailed
from fastapi_hangup.testing._result import RequestResult, assert_cancelled, assert_not_cancelled
from fastapi_hangup.testing._transport import HangUpTransport
from fastapi_hangup.testing._websocket import HangUpWebSocket, WebSocketResult

__all__ = [
    "HangUpClient",
    "HangUpTransport",
    "HangUpWebSocket",
    "LifespanFailed",
    "RequestResult",
    "WebSocketResult",
    "assert_cancelled",
    "assert_not_cancelled",
]

_http_scope = _exchange.http_scope  # the suite's hand-written ASGI tests build scopes with it
