"""Files under an app-wide ``Depends(cancel_ctx)`` on real servers: no false hang-up.

Every server reports ``http.disconnect`` once a response is complete, and a client that
reads a whole response then closes its keep-alive connection. Neither is a hang-up: no 499
record, no error, and the response's background task runs to its end. A regression test for
``FileResponse`` and ``app.frontend()`` files under ``FastAPI(dependencies=[...])``. The
servers serve ``tests.e2e.files_app:app``.
"""

from __future__ import annotations

import pytest

from ._client import Connection
from ._events import EventLog, new_request_id
from ._logs import hang_up_records, settled_log, trouble_in
from ._params import on_servers, serving
from ._servers import ServerView
from .files_app import FILE_SIZE, FRONTEND_INDEX, file_content
from .test_middleware_e2e import TABLE

pytestmark = pytest.mark.e2e

server = serving("tests.e2e.files_app:app")


@pytest.mark.check(
    "app-wide Depends(cancel_ctx): a FileResponse and app.frontend() files arrive whole, "
    "no 499, the background task runs",
    table=TABLE,
)
@on_servers()
def test_files_under_an_app_wide_dependency_are_not_a_hang_up(
    server: ServerView, events: EventLog
) -> None:
    rid = new_request_id()

    with Connection(server.port) as connection:  # keep-alive: both on one connection
        connection.send_request("GET", f"/file?rid={rid}")
        file = connection.read_response()
        connection.send_request("GET", "/static-site/index.html")
        page = connection.read_response()
        connection.send_request("GET", "/static-site/")
        index = connection.read_response()
    # ...and the client closed the connection: after complete responses, not a hang-up.

    assert file.status == 200
    assert len(file.body) == FILE_SIZE
    assert file.body == file_content()
    assert (page.status, page.body) == (200, FRONTEND_INDEX)
    assert (index.status, index.body) == (200, FRONTEND_INDEX)
    done = events.wait_for(rid, "background-done", timeout=5.0)
    assert done["t"] - events.wait_for(rid, "end")["t"] >= 0.15  # its whole 0.2 s
    assert events.find(rid, "background-stopped") is None
    log = settled_log(server)
    assert hang_up_records(server) == [], log  # none at all: the page requests have no rid
    assert trouble_in(log) == [], log
    assert server.alive()
