"""What a stopped request leaves behind: one log record, one hook call, its span and metrics.

The guard calls ``report`` exactly once for every request whose work it stopped, from
every entry point, so the four outlets always agree. Nothing here runs for a request that
ends normally: telemetry costs nothing until work is stopped.
"""

from __future__ import annotations

import importlib.metadata
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from starlette.types import Scope

from fastapi_hangup._cause import CancelCause
from fastapi_hangup._fastapi import request_telemetry, route_template, telemetry_config

logger = logging.getLogger("fastapi_hangup")

_REASONS = {499: "Client Closed Request", 504: "Deadline Exceeded"}


@dataclass(frozen=True, slots=True)
class StoppedRequest:
    """One request whose work fastapi-hangup stopped, as the ``on_stop`` hook receives it.

    The same facts go to the ``fastapi_hangup`` log record, the request's OpenTelemetry span
    and the ``fastapi_hangup.*`` metrics.
    """

    method: str
    """The request's HTTP method."""
    route: str | None
    """The route's path template (``/items/{item_id}``), prefixes of included routers and
    mounts included; ``None`` when no route had matched."""
    path: str
    """The request's path."""
    cause: CancelCause
    """Why the work was stopped."""
    status_code: int | None
    """``499`` after a hang-up (nginx's *Client Closed Request*: nothing was sent, nobody
    was there to read it), ``504`` after a deadline (the client got it), ``None`` when the
    server cancelled the request from outside, and for a websocket session (see
    ``close_code``)."""
    work_seconds: float
    """How long the work ran, from the guard's start until it had stopped and unwound
    (a shielded block and ``on_cancel`` callbacks included)."""
    latency_seconds: float | None
    """How long the work went on after the hang-up (or after the deadline passed) until it
    had stopped: the time fastapi-hangup took to stop it. ``None`` on shutdown."""
    request_id: str | None
    """The ``x-request-id`` header, when the request has one."""
    trace_id: str | None
    """The OpenTelemetry trace id (32 hex digits), when a span is current."""
    close_code: int | None = None
    """On a websocket session the client closed: its close code (``1005`` for a close frame
    without one, ``1006`` for a connection dropped without a close frame, as the server
    reports it). ``None`` for HTTP requests. A websocket session has no HTTP status to
    report: its ``status_code`` is ``None`` and its ``method`` is ``"WEBSOCKET"``."""


OnStop = Callable[[StoppedRequest], object]
"""The type of an ``on_stop`` hook: called once for every stopped request."""

# The on_stop hook of each app that add_cancellation() set up, looked up by scope["app"].
_HOOKS: weakref.WeakKeyDictionary[Any, OnStop] = weakref.WeakKeyDictionary()


def set_hook(app: Any, hook: OnStop) -> None:
    """Call ``hook`` for every request of ``app`` whose work is stopped."""
    _HOOKS[app] = hook


def report(
    scope: Scope,
    cause: CancelCause,
    status: int | None,
    work: float,
    hang_up: float | None,
    latency: float | None,
    close_code: int | None = None,
) -> StoppedRequest:
    """Log, hook, annotate the span and count one stopped request; return what was reported.

    ``work`` is how long the work ran, ``hang_up`` when the client left (both in seconds
    from the start of the guarded work), ``latency`` the time from the cause to the stop.
    """
    telemetry = request_telemetry(scope)
    span = telemetry.span if telemetry is not None else None
    stopped = StoppedRequest(
        method=scope.get("method") or ("WEBSOCKET" if scope["type"] == "websocket" else "?"),
        route=route_template(scope, telemetry),
        path=scope.get("path", "?"),
        cause=cause,
        status_code=status,
        work_seconds=work,
        latency_seconds=latency,
        request_id=_header(scope, b"x-request-id"),
        trace_id=_trace_id(span),
        close_code=close_code,
    )
    _log(stopped, hang_up)
    if telemetry is not None:
        _annotate(telemetry, stopped)
        _record(scope, stopped)
    hook = _HOOKS.get(scope.get("app"))
    if hook is not None:
        try:
            hook(stopped)
        except Exception:
            logger.exception("the on_stop hook failed for %s %s", stopped.method, stopped.path)
    return stopped


def _log(stopped: StoppedRequest, hang_up: float | None) -> None:
    route = stopped.route or stopped.path
    work_ms = stopped.work_seconds * 1000
    latency = stopped.latency_seconds
    if stopped.close_code is not None:
        outcome = f"closed by the client ({stopped.close_code})"
    elif stopped.status_code is None:
        outcome = "cancelled by the server"
    else:
        outcome = f"{stopped.status_code} {_REASONS[stopped.status_code]}"
    when = "" if hang_up is None else f" (the client left after {hang_up * 1000:.1f} ms)"
    logger.info(
        "%s %s %s: work stopped after %.1f ms%s",
        stopped.method,
        route,
        outcome,
        work_ms,
        when,
        extra={
            "method": stopped.method,
            "route": route,
            "path": stopped.path,
            "status_code": stopped.status_code,
            "close_code": stopped.close_code,
            "cause": stopped.cause.value,
            "work_ms": work_ms,
            "hang_up_ms": None if hang_up is None else hang_up * 1000,
            "latency_ms": None if latency is None else latency * 1000,
            "request_id": stopped.request_id,
            "trace_id": stopped.trace_id,
        },
    )


def _annotate(telemetry: Any, stopped: StoppedRequest) -> None:
    # FastAPI ends the server span after the app returns; what is set here is on it then.
    if stopped.status_code == 499:
        # Nothing was sent, so FastAPI would record no status at all; 499 is what nginx
        # logs for a client that closed, on FastAPI's span and its duration metric alike.
        telemetry.status_code = 499
    span = telemetry.span
    if span is None or not span.is_recording():
        return
    attributes: dict[str, Any] = {
        "fastapi_hangup.cause": stopped.cause.value,
        "fastapi_hangup.work.duration": stopped.work_seconds,
    }
    if stopped.status_code is not None:
        attributes["http.response.status_code"] = stopped.status_code
    if stopped.latency_seconds is not None:
        attributes["fastapi_hangup.stop.latency"] = stopped.latency_seconds
    if stopped.close_code is not None:
        attributes["fastapi_hangup.websocket.close_code"] = stopped.close_code
    span.set_attributes(attributes)


# Seconds. Stopped work is often long (an LLM call, a report): up to five minutes.
_WORK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Seconds. A hang-up stops the work within a millisecond; a shielded block takes longer.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class _Instruments:
    __slots__ = ("latency", "provider", "stopped", "work")

    def __init__(self, provider: metrics.MeterProvider) -> None:
        try:
            version: str | None = importlib.metadata.version("fastapi-hangup")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
            version = None
        meter = provider.get_meter("fastapi_hangup", version)
        self.provider = provider
        self.stopped = meter.create_counter(
            "fastapi_hangup.requests.stopped",
            unit="{request}",
            description="Requests whose work was stopped, by route, method and cause.",
        )
        self.work = meter.create_histogram(
            "fastapi_hangup.work.duration",
            unit="s",
            description="How long the work of a stopped request had run.",
            explicit_bucket_boundaries_advisory=_WORK_BUCKETS,
        )
        self.latency = meter.create_histogram(
            "fastapi_hangup.stop.latency",
            unit="s",
            description="Time from the hang-up (or the passed deadline) to the stopped work.",
            explicit_bucket_boundaries_advisory=_LATENCY_BUCKETS,
        )


_instruments: _Instruments | None = None


def _record(scope: Scope, stopped: StoppedRequest) -> None:
    global _instruments
    config = telemetry_config(scope.get("app"))
    if config is not None and not config.get("metrics", True):
        return
    provider = (config or {}).get("meter_provider") or metrics.get_meter_provider()
    if _instruments is None or _instruments.provider is not provider:
        _instruments = _Instruments(provider)
    attributes: dict[str, Any] = {
        "http.request.method": stopped.method,
        "fastapi_hangup.cause": stopped.cause.value,
    }
    if stopped.route is not None:
        attributes["http.route"] = stopped.route
    _instruments.stopped.add(1, attributes)
    _instruments.work.record(stopped.work_seconds, attributes)
    if stopped.latency_seconds is not None:
        _instruments.latency.record(stopped.latency_seconds, attributes)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _trace_id(span: trace.Span | None) -> str | None:
    context = (span or trace.get_current_span()).get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None
