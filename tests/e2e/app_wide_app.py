"""The app for the app-wide real-server tests: ``add_cancellation(app)`` and nothing else.

Served as ``tests.e2e.app_wide_app:app``. No endpoint mentions fastapi-hangup: the one
``add_cancellation`` call guards them all, including a router included after it. FastAPI's
native telemetry runs with the real opentelemetry-sdk: every finished server span is recorded
as an event of its request (``?rid=``), and ``GET /metrics`` is a Prometheus scrape.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Response
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

from fastapi_hangup import StoppedRequest, add_cancellation

from ._app_kit import make_app, work
from ._events import record


class _RecordSpans(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        attributes = dict(span.attributes or {})
        query = parse_qs(str(attributes.get("url.query", "")))
        if span.parent is None and "rid" in query:
            record(query["rid"][0], "span", name=span.name, attributes=attributes)


def _on_stop(stopped: StoppedRequest) -> None:
    # The test sends its request id as x-request-id too, so the hook can tell it.
    record(
        stopped.request_id or "-",
        "stopped",
        route=stopped.route,
        cause=stopped.cause.value,
        status_code=stopped.status_code,
        latency=stopped.latency_seconds,
    )


tracer_provider = TracerProvider()
tracer_provider.add_span_processor(_RecordSpans())
registry = CollectorRegistry()
meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
telemetry: Any = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}

app = make_app(telemetry=telemetry)
add_cancellation(app, on_stop=_on_stop)


@app.get("/slow")
async def slow(rid: str, seconds: float = 30) -> dict[str, bool]:
    await work(rid, seconds)
    return {"ok": True}


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")


items = APIRouter(prefix="/items")


@items.get("/{item_id}/slow")
async def item_slow(item_id: int, rid: str, seconds: float = 30) -> dict[str, int]:
    await work(rid, seconds)
    return {"item_id": item_id}


app.include_router(items)  # after add_cancellation: covered all the same
