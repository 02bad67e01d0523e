"""Parametrize a test over servers, with the limitations a server truly has marked xfail.

A test asks for ``server``, a view of a running server (``_servers.ServerView``), and is
parametrized with :func:`on_servers`. Which app the server runs is up to the module:
``conftest.py`` serves ``tests.e2e.app:app``, and a module that tests another app
overrides the fixture with ``server = serving("tests.e2e.other_app:app")``.

A limitation is recorded as ``xfail(strict=True)`` with the documented reason: the test still
runs, must fail there, and turns red the day the server (or fastapi-hangup) changes. The
reasons show up in ``docs/server-matrix.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import pytest

from ._servers import SERVERS, Server, ServerPool, ServerView

#: The two ways a guarded endpoint streams (see app.py), and their rows in the matrix.
STREAM_TARGET = {"route": "/route/stream", "dependency": "/guarded/stream"}
STREAM_CHECK = {
    "route": "a hang-up stops a StreamingResponse: CancellableRoute",
    "dependency": "a hang-up stops a StreamingResponse: plain route, Depends(cancel_ctx)",
}


def serving(app: str) -> object:
    """A ``server`` fixture: a running server serving ``app`` (an ASGI import string).

    The server is the test's parameter (indirect); the session's :class:`ServerPool`
    starts it, or hands over the process that served the test before.
    """

    @pytest.fixture
    def server(request: pytest.FixtureRequest, server_pool: ServerPool) -> Iterator[ServerView]:
        spec: Server = request.param
        missing = spec.missing()
        if missing:
            pytest.skip(f"{spec.name} needs {', '.join(missing)}")
        view = server_pool.view(spec, app)
        yield view
        # Captured output is shown only for a failing test: then the evidence is right there.
        print(f"----- output of {view!r} during the test -----\n{view.log()}")
        if not view.alive():
            print("----- the server is gone; the next test gets a fresh one -----")

    server.__doc__ = f"A running server serving ``{app}``; parametrize it with on_servers()."
    return server


def on_servers(
    servers: Iterable[Server] = SERVERS,
    *,
    xfail: Mapping[Server, str] | None = None,
    xfail_all: str | None = None,
) -> pytest.MarkDecorator:
    """Parametrize ``server`` (indirect) over ``servers``.

    Args:
        servers: the servers to run on.
        xfail: the servers that cannot pass, each with its reason.
        xfail_all: a reason that holds on every other server (a known bug).
    """
    reasons = dict(xfail or {})
    params = []
    for server in servers:
        reason = reasons.get(server, xfail_all)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(server, marks=marks, id=server.name))
    return pytest.mark.parametrize("server", params, indirect=True)


#: What an endpoint reading the body may see instead of the cancellation after a hang-up: the
#: replayed ``http.disconnect`` can reach ``request.stream()`` before the cancellation does,
#: and Starlette raises this. Either way the endpoint stops.
STARLETTE_CLIENT_DISCONNECT = "starlette.requests.ClientDisconnect"

DAPHNE_READS_WHOLE_BODY = (
    "daphne (Twisted) reads the whole request body before it starts the app: an upload "
    "abandoned half-way never reaches the endpoint, so there is nothing to cancel"
)
DAPHNE_QUEUES_WHOLE_BODY = (
    "daphne reads the whole body, then queues all of it for the app at once (no "
    "backpressure): memory grows by the body's size, with or without fastapi-hangup"
)
