"""The benchmarks measure what they say: every variant they can build answers 200."""

from __future__ import annotations

import httpx
import pytest

from benchmarks._apps import build, names

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # uvicorn's, where they run
@pytest.mark.parametrize("variant", names())
async def test_every_benchmark_variant_answers(variant: str, anyio_backend: str) -> None:
    transport = httpx.ASGITransport(app=build(variant))
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.get("/")
    assert (response.status_code, response.json()) == (200, {"ok": True})
