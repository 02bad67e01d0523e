"""Behind ``@app.middleware("http")``, with the app's own ``ClientDisconnected`` handler.

The handler returns ``None`` (it only counts, as docs/cancellation.md suggests), so nothing
is sent and ``call_next()`` would fail with "No response returned." if fastapi-hangup did
not answer its empty 499. The servers serve ``tests.e2e.middleware_app:counting_app``.
"""

from __future__ import annotations

import pytest

from ._checks import assert_hang_up_cancels_quietly
from ._events import EventLog
from ._params import on_servers, serving
from ._servers import ServerView
from .middleware_app import ENTRY_POINTS
from .test_middleware_e2e import CANCELLED, TABLE, each_entry_point

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.middleware_app:counting_app")


@pytest.mark.check(
    'behind @app.middleware("http"), own ClientDisconnected handler returning None: '
    "a hang-up cancels, quietly",
    table=TABLE,
)
@on_servers()
@each_entry_point
def test_hang_up_behind_middleware_with_own_handler_cancels_quietly(
    server: ServerView, events: EventLog, entry: str
) -> None:
    rid = assert_hang_up_cancels_quietly(
        server, events, ENTRY_POINTS[entry], cancelled=CANCELLED[entry]
    )

    if entry != "route":  # the route class ends the request itself, raising nothing
        handled = events.wait_for(rid, "handled")
        assert handled["path"] == ENTRY_POINTS[entry]
        assert [e for e in events.of(rid) if e["event"] == "handled"] == [handled]
