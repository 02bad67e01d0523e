"""The examples of docs/observability.md, exercised in memory (the e2e suite serves them too)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup.testing import HangUpTransport, assert_cancelled

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _logger_as_it_was() -> Iterator[None]:
    # examples/observability.py configures the fastapi_hangup logger when imported, as an
    # app would; the rest of the suite expects it untouched.
    logger = logging.getLogger("fastapi_hangup")
    handlers, level = list(logger.handlers), logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


async def hang_up_on_search(app: FastAPI, then: str | None = None) -> str:
    """Give up on ``GET /search``; return the text of ``GET then`` afterwards."""
    transport = HangUpTransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with anyio.move_on_after(0.05):
            await client.get("/search", params={"q": "x"})
        assert_cancelled(transport.last_request)
        return "" if then is None else (await client.get(then)).text


async def test_the_hook_counts_a_stopped_search() -> None:
    from examples.observability import app, stopped_by_route

    stopped_by_route.clear()
    await hang_up_on_search(app)
    assert stopped_by_route == {("/search", "client_disconnected"): 1}


async def test_the_prometheus_scrape_counts_a_stopped_search() -> None:
    from examples.observability_otel import app

    scrape = await hang_up_on_search(app, then="/metrics/")
    (line,) = [
        line
        for line in scrape.splitlines()
        if line.startswith("fastapi_hangup_requests_stopped_total{")
        and 'http_route="/search"' in line
    ]
    assert 'fastapi_hangup_cause="client_disconnected"' in line
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert "fastapi_hangup_stop_latency_seconds_count{" in scrape
