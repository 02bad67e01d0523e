"""What every app served by the real-server tests shares: logging, request ids, ``/ready``,
and the work its endpoints do while they record what happened.

The ``fastapi_hangup`` logger writes to stderr with the :data:`LOG_TAG` prefix and the
request id (``?rid=``) at the end, so a test can count the records of its own request.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup import CancelOnDisconnect

from ._events import LOG_TAG, record

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

_request_id: ContextVar[str] = ContextVar("request_id", default="-")


class _WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rid = _request_id.get()
        return True


def log_to_stderr() -> None:
    """Send the ``fastapi_hangup`` records to stderr, once per process."""
    logger = logging.getLogger("fastapi_hangup")
    if any(isinstance(f, _WithRequestId) for h in logger.handlers for f in h.filters):
        return  # installed already
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_WithRequestId())
    form = f"{LOG_TAG} %(levelname)s %(name)s: %(message)s [rid=%(rid)s]"
    handler.setFormatter(logging.Formatter(form))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # exactly one line per record, whatever the server configures


class _RequestIdMiddleware:
    """Puts the request's ``?rid=`` where log records of its task can find it.

    It also installs the log handler, on the first request: not on import, which would
    change the logging of the test process that imports an app module for its constants,
    and not in a lifespan, which daphne does not run.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            log_to_stderr()
            query = parse_qs(scope["query_string"].decode("latin-1"))
            _request_id.set(query.get("rid", ["-"])[0])
        await self.app(scope, receive, send)


async def _print_unhandled(request: Request, exc: Exception) -> PlainTextResponse:
    # Starlette's last-resort handler: servers log the exception after it, but hypercorn
    # stays silent if a cancellation hits the task first. Print it, so no error goes unseen.
    print(f"{LOG_TAG} ERROR unhandled in {request.method} {request.url.path}:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return PlainTextResponse("Internal Server Error", status_code=500)


async def _ready() -> dict[str, bool]:
    return {"ready": True}


def make_app(lifespan: Lifespan | None = None, **options: Any) -> FastAPI:
    """A FastAPI app with request ids in its log records, loud errors and ``GET /ready``.

    ``options`` go to ``FastAPI()`` (``dependencies=[...]``).
    """
    app = FastAPI(lifespan=lifespan, **options)
    app.add_middleware(_RequestIdMiddleware)
    app.add_exception_handler(Exception, _print_unhandled)
    app.add_api_route("/ready", _ready)
    return app


def qualified(cls: type) -> str:
    """``module.QualName`` of a class, as the events record exception types."""
    return f"{cls.__module__}.{cls.__qualname__}"


def cancelled_exc_name() -> str:
    """The qualified name of the running backend's cancellation exception."""
    return qualified(anyio.get_cancelled_exc_class())


async def work(rid: str, seconds: float, ctx: CancelOnDisconnect | None = None) -> None:
    """Sleep ``seconds``, recording ``start`` and ``end``.

    ``start`` carries the backend's cancellation exception (``cancelled_exc``), ``end`` the
    exception that ended the work (``exc``, None if none) and, with ``ctx``, whether the
    request was cancelled by then (``cancelled``).
    """
    record(rid, "start", cancelled_exc=cancelled_exc_name())
    exc_name = None
    try:
        await anyio.sleep(seconds)
    except BaseException as exc:
        exc_name = qualified(type(exc))
        raise
    finally:
        cancelled = None if ctx is None else ctx.is_cancelled
        record(rid, "end", cancelled=cancelled, exc=exc_name)


async def finish_later(rid: str) -> None:
    """A background task: 0.2 s of work, then ``background-done`` (``-stopped`` if cut)."""
    try:
        await anyio.sleep(0.2)
    except BaseException as exc:
        record(rid, "background-stopped", exc=qualified(type(exc)))
        raise
    record(rid, "background-done")
