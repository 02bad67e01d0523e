"""The steps and checks that the real-server tests share, over HTTP/1.1, HTTP/2 and nginx.

A check takes what the test gathered (the app's events, a response, the server's output)
and asserts one promise, with the evidence in the message when it does not hold.
"""

from __future__ import annotations

import hashlib

from ._client import Connection, HangUp, Response, get
from ._events import Event, EventLog, new_request_id, poll
from ._logs import hang_up_records, settled_log, trouble_in
from ._params import STARLETTE_CLIENT_DISCONNECT
from ._servers import ServerView

#: Generous: every server delivers a hang-up within ~1 ms (SERVERS.md).
PROMPT = 1.0


def hang_up_mid_request(
    port: int,
    events: EventLog,
    target: str,
    how: HangUp = "fin",
    *,
    method: str = "GET",
    started: str = "start",
) -> tuple[str, Event, float]:
    """Send a request for ``target``, hang up once the app recorded ``started``.

    The request id goes on the query string. Returns (rid, the ``started`` event, the
    client's ``time.monotonic()`` just before ``close()``).
    """
    rid = new_request_id()
    separator = "&" if "?" in target else "?"
    body = None if method == "GET" else b""
    with Connection(port) as connection:
        connection.send_request(method, f"{target}{separator}rid={rid}", body=body)
        start = events.wait_for(rid, started)
        closed_at = connection.hang_up(how)
    return rid, start, closed_at


def assert_cancelled_promptly(
    start: Event, end: Event, since: float, what: str, *, cancelled: bool | None = True
) -> None:
    """The work ended by the backend's cancellation within :data:`PROMPT` of ``since``.

    ``cancelled`` is what the context said at the end (None: the endpoint had none).
    """
    latency = end["t"] - since
    print(f"{what} {latency * 1000:.2f} ms after the hang-up")
    assert end["exc"] == start["cancelled_exc"], end
    assert end.get("cancelled") is cancelled, end
    assert 0 <= latency < PROMPT


def assert_work_runs_to_its_end(
    server: ServerView, events: EventLog, rid: str, start: Event
) -> None:
    """The 1.5 s of work (``?seconds=1.5``) go on after the hang-up, to their end."""
    assert not poll(lambda: events.find(rid, "end"), timeout=0.5)  # half a second on: working
    end = events.wait_for(rid, "end", timeout=5.0)
    assert end["exc"] is None
    assert end["t"] - start["t"] >= 1.4
    assert hang_up_records(server, rid) == []


def assert_ended_quietly(server: ServerView, rid: str, operation: str) -> None:
    """One 499 record for ``operation`` (``"GET /route/slow"``), no error, still serving."""
    assert poll(lambda: hang_up_records(server, rid), timeout=3.0), server.log()
    assert get(server.port, "/ready").status == 200  # a second record would be out by now
    records = hang_up_records(server, rid)
    assert len(records) == 1, records
    assert f"{operation} 499" in records[0]
    log = server.log()
    assert not trouble_in(log), log
    assert server.alive()


def assert_upload_cancelled_quietly(server: ServerView, rid: str, start: Event, end: Event) -> None:
    """The endpoint reading the body stopped, and the request ended with its 499 record."""
    # The request's last words: its 499 record or, with the bug, a traceback (then wait for
    # all of it, so that none of it lands in the next test's share of the log).
    poll(lambda: hang_up_records(server, rid) or trouble_in(server.log()), timeout=3.0)
    log = settled_log(server)
    assert not trouble_in(log), log
    assert end["cancelled"] is True
    assert end["exc"] in (start["cancelled_exc"], STARLETTE_CLIENT_DISCONNECT)
    assert len(hang_up_records(server, rid)) == 1, log


def assert_upload_arrived(response: Response, data: bytes, events: EventLog, rid: str) -> None:
    """The endpoint got all of ``data``, byte for byte, and was not cancelled."""
    assert response.status == 200
    assert response.json()["size"] == len(data)
    assert response.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert events.wait_for(rid, "end")["cancelled"] is False


def assert_background_task_ran_on(
    server: ServerView, events: EventLog, rid: str, done: Event
) -> None:
    """The background task of ``/guarded/background`` ran its whole 0.2 s, uncancelled."""
    end = events.wait_for(rid, "end")
    assert end["cancelled"] is False
    assert events.find(rid, "background-stopped") is None
    assert done["t"] - end["t"] >= 0.15  # the task's whole 0.2 s sleep
    assert hang_up_records(server, rid) == []


def assert_whole_stream(server: ServerView, events: EventLog, rid: str, response: Response) -> None:
    """A 5-line ``/route/stream`` or ``/guarded/stream`` arrived whole, uncancelled."""
    assert response.status == 200
    assert response.body == b"".join(b"tick %d\n" % index for index in range(5))
    end = events.wait_for(rid, "end")
    assert end == {**end, "exc": None, "sent": 5, "cancelled": False}
    assert hang_up_records(server, rid) == []


def assert_hang_up_cancels_quietly(
    server: ServerView,
    events: EventLog,
    target: str,
    *,
    cancelled: bool | None = True,
) -> str:
    """Hang up (FIN) on a ``GET target`` mid-work: the :func:`~._app_kit.work` is cancelled
    within :data:`PROMPT`, and the request ends quietly (:func:`assert_ended_quietly`).

    ``cancelled`` is what the endpoint's context says at the end (None: it has none).
    Returns the request id.
    """
    rid, start, closed_at = hang_up_mid_request(server.port, events, target)
    end = events.wait_for(rid, "end", timeout=5.0)
    assert_cancelled_promptly(
        start, end, closed_at, f"{server.server.name} {target}: cancelled", cancelled=cancelled
    )
    assert_ended_quietly(server, rid, f"GET {target.partition('?')[0]}")
    return rid
