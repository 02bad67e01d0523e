"""Two services in a chain: the budget and the hang-up travel with every httpx call.

``app`` (orders) calls ``inventory`` over HTTP. Serve each with uvicorn; ``INVENTORY_URL`` tells
orders where inventory listens. tests/test_docs_examples.py runs both in memory, and
tests/e2e/test_cascade_e2e.py proves the same over real sockets, three services deep.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from fastapi_hangup import CancelCtx, add_cancellation, forward_deadline

INVENTORY_URL = os.environ.get("INVENTORY_URL", "http://localhost:8001")
clients: dict[str, httpx.AsyncClient] = {}


# --8<-- [start:caller]
@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with httpx.AsyncClient(
        base_url=INVENTORY_URL,
        event_hooks={"request": [forward_deadline]},  # the budget travels with every call
    ) as client:
        clients["inventory"] = client
        yield


app = FastAPI(lifespan=lifespan)
add_cancellation(app, deadline=2.0, deadline_header=True)  # 2 s, or less if the caller says so


@app.get("/orders/{order_id}")
async def order(order_id: str) -> dict[str, Any]:
    # Sent with `x-envoy-expected-rq-timeout-ms: <ms left of the budget>`, and timeouts no
    # longer than that. A hang-up, or the budget's end, closes the connection at once.
    response = await clients["inventory"].get(f"/stock/{order_id}")
    response.raise_for_status()
    return {"order": order_id, "stock": response.json()}


# --8<-- [end:caller]


# --8<-- [start:downstream]
inventory = FastAPI()
add_cancellation(inventory, deadline_header=True)  # honours the caller's budget: that is all


@inventory.get("/stock/{item}")
async def stock(item: str, ctx: CancelCtx, seconds: float = 0.05) -> dict[str, Any]:
    await anyio.sleep(seconds)  # stopped when orders' client hangs up or its budget ends
    return {"item": item, "count": 3, "budget_left": ctx.remaining()}


# --8<-- [end:downstream]
