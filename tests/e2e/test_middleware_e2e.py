"""Behind ``@app.middleware("http")`` (``BaseHTTPMiddleware``) on real servers.

Its ``call_next()`` fails with "No response returned." when the app sends nothing, so behind
it an abandoned request answers an empty 499 that nobody reads (docs/cancellation.md). A
regression test for each entry point: the work stops, one 499 record, no error in the
server's output, and the server serves on. The servers serve
``tests.e2e.middleware_app:app``; ``test_middleware_handler_e2e.py`` does the same with the
app's own ``ClientDisconnected`` handler.
"""

from __future__ import annotations

import pytest

from ._checks import assert_hang_up_cancels_quietly
from ._client import get
from ._events import EventLog, new_request_id
from ._logs import hang_up_records, settled_log, trouble_in
from ._params import on_servers, serving
from ._servers import ServerView
from .middleware_app import ENTRY_POINTS

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.middleware_app:app")
TABLE = "Inside a FastAPI app"
#: What the endpoint's context says at the end: the decorator's endpoint has none.
CANCELLED = {"dependency": True, "decorator": None, "route": True}
each_entry_point = pytest.mark.parametrize("entry", list(ENTRY_POINTS))


@pytest.mark.check('behind @app.middleware("http"): a hang-up cancels, quietly', table=TABLE)
@on_servers()
@each_entry_point
def test_hang_up_behind_base_http_middleware_cancels_quietly(
    server: ServerView, events: EventLog, entry: str
) -> None:
    assert_hang_up_cancels_quietly(server, events, ENTRY_POINTS[entry], cancelled=CANCELLED[entry])


@pytest.mark.check('behind @app.middleware("http"): an answer passes untouched', table=TABLE)
@on_servers()
@each_entry_point
def test_answer_behind_base_http_middleware_is_untouched(
    server: ServerView, events: EventLog, entry: str
) -> None:
    rid = new_request_id()

    response = get(server.port, f"{ENTRY_POINTS[entry]}?rid={rid}&seconds=0.05")

    assert response.status == 200
    assert response.json() == {"rid": rid}
    end = events.wait_for(rid, "end")
    assert end["exc"] is None
    assert end["cancelled"] is (None if CANCELLED[entry] is None else False)
    log = settled_log(server)
    assert hang_up_records(server, rid) == []
    assert trouble_in(log) == [], log
