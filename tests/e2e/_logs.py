"""What a quiet end looks like in a server's output, for the checks that read it."""

from __future__ import annotations

import re
import time
from typing import Protocol

from ._events import LOG_TAG


class HasLog(Protocol):
    """A running server (:class:`RunningServer`) or one test's view of it (:class:`ServerView`)."""

    def log(self) -> str: ...


#: Text that must never be in a server's output after a guarded request ended.
TROUBLE = (
    "Traceback",
    "Exception in ASGI application",
    "No response returned",
    "Error in ASGI",
    "response already started",
    "returned without starting response",
    "socket.send() raised exception",
    "ERROR",
)

#: An access-log line saying a response to /guarded/slow went out: uvicorn writes
#: ``"GET /guarded/slow?rid=... HTTP/1.1" 200 OK``, hypercorn ``"GET /guarded/slow 1.1" 200 29``.
#: Lines that are fine for a request whose client left: hypercorn's ``"GET /guarded/slow 1.1"
#: - -`` and granian's ``"GET /guarded/slow HTTP/1.1" 500`` (granian's word for "the app sent
#: nothing"; a real 500 would come with a traceback, which TROUBLE catches).
SENT_SLOW_RESPONSE = re.compile(r'"GET /guarded/slow[^"]*" [1-4]\d\d')


def hang_up_records(server: HasLog, rid: str | None = None) -> list[str]:
    """The fastapi_hangup log records for abandoned requests (499) in the server's output.

    With ``rid``, only those of that request (``_app_kit.py`` ends each record with its id).
    """
    return status_records(server, 499, rid)


def status_records(server: HasLog, status: int, rid: str | None = None) -> list[str]:
    """The fastapi_hangup log records of requests it ended with ``status`` (499, 504)."""
    prefix = f"{LOG_TAG} INFO fastapi_hangup:"
    suffix = f" [rid={rid}]" if rid else ""
    lines = server.log().splitlines()
    return [
        line
        for line in lines
        if line.startswith(prefix) and f" {status} " in line and line.endswith(suffix)
    ]


def trouble_in(log: str) -> list[str]:
    """The lines of ``log`` that hold any of :data:`TROUBLE`."""
    return [line for line in log.splitlines() if any(text in line for text in TROUBLE)]


def settled_log(server: HasLog, quiet: float = 0.1, timeout: float = 3.0) -> str:
    """The server's output once it has not grown for ``quiet`` seconds (at most ``timeout``)."""
    log = server.log()
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / quiet) + 1):
        time.sleep(quiet)
        latest = server.log()
        if latest == log or time.monotonic() >= deadline:
            return latest
        log = latest
    return log
