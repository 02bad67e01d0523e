"""A stopped request in FastAPI's native OpenTelemetry telemetry: its span and our metrics.

With the real opentelemetry-sdk and its in-memory exporters, handed to the app through
``FastAPI(telemetry=...)``, so no global provider is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fastapi_hangup import CancelCtx, CancellableRoute, add_cancellation, cancellable
from fastapi_hangup.testing import HangUpTransport, assert_cancelled

pytestmark = pytest.mark.anyio


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    config: dict[str, Any]

    def attributes(self) -> dict[str, Any]:
        """The attributes of the one server span."""
        return dict(self.server_span().attributes or {})

    def server_span(self) -> ReadableSpan:
        (span,) = [s for s in self.spans.get_finished_spans() if s.parent is None]
        return span

    def points(self, name: str) -> list[Any]:
        data = self.metrics.get_metrics_data()
        if data is None:  # nothing was recorded at all
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(
        spans, reader, {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    )
    tracer_provider.shutdown()
    meter_provider.shutdown()


async def slow() -> dict[str, bool]:
    await anyio.sleep(30)
    return {"ok": True}


def app_with(telemetry: Telemetry, *, entry: str = "app") -> FastAPI:
    app = FastAPI(telemetry=telemetry.config)  # type: ignore[arg-type]
    items = APIRouter(prefix="/items")
    if entry == "app":
        add_cancellation(app)
        items.add_api_route("/{item_id}", slow)
    elif entry == "route":
        items = APIRouter(prefix="/items", route_class=CancellableRoute)
        items.add_api_route("/{item_id}", slow)
    elif entry == "dependency":

        async def with_ctx(item_id: int, ctx: CancelCtx) -> dict[str, bool]:
            return await slow()

        items.add_api_route("/{item_id}", with_ctx)
    else:

        @items.get("/{item_id}")
        @cancellable
        async def decorated(item_id: int) -> dict[str, bool]:
            return await slow()

    app.include_router(items)

    @app.get("/budget")
    @cancellable(deadline=0.05)
    async def budget() -> dict[str, bool]:
        return await slow()

    return app


async def hang_up_on(app: FastAPI, path: str, **headers: str) -> HangUpTransport:
    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with anyio.move_on_after(0.1):
            await client.get(path, headers=headers)
    assert_cancelled(transport.last_request)
    return transport


@pytest.mark.parametrize("entry", ["app", "route", "dependency", "decorator"])
async def test_the_server_span_says_the_client_hung_up(telemetry: Telemetry, entry: str) -> None:
    await hang_up_on(app_with(telemetry, entry=entry), "/items/7")

    span = telemetry.server_span()
    attributes = telemetry.attributes()
    assert span.name == "GET /items/{item_id}"
    assert attributes["http.route"] == "/items/{item_id}"
    assert attributes["http.response.status_code"] == 499
    assert attributes["fastapi_hangup.cause"] == "client_disconnected"
    assert 0 < attributes["fastapi_hangup.work.duration"] < 5  # seconds, as OTel has them
    assert (
        0 <= attributes["fastapi_hangup.stop.latency"] < attributes["fastapi_hangup.work.duration"]
    )


async def test_the_server_span_says_the_deadline_passed(telemetry: Telemetry) -> None:
    app = app_with(telemetry)
    async with httpx.AsyncClient(
        transport=HangUpTransport(app), base_url="http://testserver"
    ) as client:
        assert (await client.get("/budget")).status_code == 504

    attributes = telemetry.attributes()
    assert attributes["http.response.status_code"] == 504
    assert attributes["fastapi_hangup.cause"] == "deadline_exceeded"
    # The budget is 0.05 s on the loop's clock, which uvloop reads once per iteration (in
    # whole milliseconds): the timer may end the work up to ~2 ms before 0.05 s have passed
    # on time.monotonic()'s, which the duration is measured by.
    assert attributes["fastapi_hangup.work.duration"] >= 0.05 - 0.003
    assert attributes["fastapi_hangup.stop.latency"] >= 0


async def test_the_metrics_count_and_time_stopped_requests(telemetry: Telemetry) -> None:
    app = app_with(telemetry)
    await hang_up_on(app, "/items/7")
    await hang_up_on(app, "/items/8")

    (count,) = telemetry.points("fastapi_hangup.requests.stopped")
    assert count.value == 2
    assert dict(count.attributes) == {
        "http.route": "/items/{item_id}",
        "http.request.method": "GET",
        "fastapi_hangup.cause": "client_disconnected",
    }
    (work,) = telemetry.points("fastapi_hangup.work.duration")
    assert work.count == 2
    assert 0 < work.sum < 10  # seconds
    (latency,) = telemetry.points("fastapi_hangup.stop.latency")
    assert latency.count == 2
    assert latency.sum < work.sum
    # FastAPI's own request duration metric has the outcome too, not a bare ConnectionError.
    durations = telemetry.points("http.server.request.duration")
    assert {p.attributes.get("http.response.status_code") for p in durations} == {499}


async def test_no_metrics_when_the_app_turns_them_off(telemetry: Telemetry) -> None:
    telemetry.config["metrics"] = False
    await hang_up_on(app_with(telemetry), "/items/7")
    assert telemetry.points("fastapi_hangup.requests.stopped") == []
    assert telemetry.attributes()["fastapi_hangup.cause"] == "client_disconnected"


async def test_the_log_record_carries_the_trace_and_request_ids(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="fastapi_hangup")
    transport = await hang_up_on(app_with(telemetry), "/items/7", **{"x-request-id": "req-42"})

    (record,) = transport.last_request.log_records
    span = telemetry.server_span()
    assert vars(record)["trace_id"] == format(span.context.trace_id, "032x")
    assert vars(record)["request_id"] == "req-42"
    assert vars(record)["route"] == "/items/{item_id}"
    assert record.getMessage().startswith("GET /items/{item_id} 499 Client Closed Request")


async def test_without_telemetry_nothing_changes_but_the_ids_are_none(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    add_cancellation(app)
    app.add_api_route("/items/{item_id}", slow)
    transport = await hang_up_on(app, "/items/7")
    (record,) = transport.last_request.log_records
    assert vars(record)["trace_id"] is None
    assert vars(record)["request_id"] is None
    assert vars(record)["route"] == "/items/{item_id}"
