"""What cleanup may await after a hang-up, on a real asyncio server and on hypercorn's trio worker.

asyncio delivers the hang-up once, so an unshielded ``await`` in ``finally`` runs; trio stays
level-triggered, so it is cancelled again, and only the shielded write lands (the docs'
"Cleanup that awaits"). On both, a hang-up closes an httpx stream to a slow upstream, which
then has no stream left open, and the client's pool keeps serving.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._client import get
from ._events import EventLog, poll
from ._params import on_servers, serving
from ._servers import HYPERCORN_TRIO, UVICORN_H11, UVICORN_HTTPTOOLS, ServerView, run_server
from .test_services_e2e import hang_up_on

pytestmark = pytest.mark.e2e

N = 20  # hang-ups per pattern and server
server = serving("tests.e2e.cleanup_app:app")
on_both_backends = on_servers([UVICORN_HTTPTOOLS, HYPERCORN_TRIO])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The slow upstream's port, in the environment of the servers started meanwhile."""
    log = Path(tmp_path_factory.mktemp("upstream")) / "upstream.log"
    with (
        run_server(UVICORN_H11, "tests.e2e.upstream_app:app", log) as running,
        pytest.MonkeyPatch.context() as env,
    ):
        env.setenv("HANGUP_E2E_UPSTREAM", str(running.port))
        yield running.port


def on_trio(server: ServerView) -> bool:
    return server.server == HYPERCORN_TRIO


@on_both_backends
def test_an_unshielded_finally_write_runs_on_asyncio_only(
    server: ServerView, events: EventLog, upstream: int
) -> None:
    rids = [hang_up_on(server, events, "/finally-write") for _ in range(N)]
    written = sum(1 for rid in rids if events.find(rid, "written"))
    ends = {events.wait_for(rid, "end")["exc"] for rid in rids}
    name = server.server.name
    print(f"{name}: {written} of {N} unshielded finally writes landed; ended by {ends}")
    if on_trio(server):
        assert (written, ends) == (0, {"trio.Cancelled"})
    else:
        assert (written, ends) == (N, {None})


@on_both_backends
def test_a_shielded_finally_write_runs_on_both(
    server: ServerView, events: EventLog, upstream: int
) -> None:
    rids = [hang_up_on(server, events, "/shielded-finally-write") for _ in range(N)]
    written = sum(1 for rid in rids if events.find(rid, "written"))
    print(f"{server.server.name}: {written} of {N} shielded finally writes landed")
    assert written == N


@on_both_backends
def test_a_hang_up_closes_the_upstream_stream(
    server: ServerView, events: EventLog, upstream: int
) -> None:
    def streams_open() -> int:
        count: int = get(upstream, "/open").json()["open"]
        return count

    for _ in range(N):
        hang_up_on(server, events, "/httpx")
    assert poll(lambda: streams_open() == 0, 5.0), f"{streams_open()} upstream streams open"
