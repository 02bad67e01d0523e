"""Shielding a write: it completes even if the client hangs up meanwhile."""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx

app = FastAPI()
ledger: list[str] = []  # stands in for a database table


async def charge(order_id: str) -> None:
    await anyio.sleep(0.2)  # the payment provider's round trip
    ledger.append(order_id)


@app.post("/orders/{order_id}/pay")
async def pay(order_id: str, ctx: CancelCtx) -> dict[str, str]:
    with ctx.shield():
        await charge(order_id)  # runs to completion, hang-up or not
    await anyio.sleep(0.1)  # a hang-up during the charge is delivered here
    return {"status": "paid"}
