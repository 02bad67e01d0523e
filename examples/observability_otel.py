"""Observability: FastAPI's native OpenTelemetry, with a Prometheus scrape (docs/observability.md).

Needs ``pip install opentelemetry-sdk opentelemetry-exporter-prometheus``; run it with
``uvicorn examples.observability_otel:app``, hang up on ``/search?q=x``, then open
``localhost:8000/metrics/``.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import make_asgi_app

from fastapi_hangup import add_cancellation

meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
app = FastAPI(telemetry={"meter_provider": meter_provider})
add_cancellation(app)
app.mount("/metrics", make_asgi_app())  # fastapi_hangup_requests_stopped_total, ...


@app.get("/search")
async def search(q: str) -> dict[str, str]:
    await anyio.sleep(5)  # stand-in for a slow search
    return {"q": q}
