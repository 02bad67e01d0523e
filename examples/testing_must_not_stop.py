"""A write that must not stop: the charge is shielded, and the log says what happened."""

from __future__ import annotations

import anyio
import httpx
import pytest
from fastapi import FastAPI

from fastapi_hangup import CancelCtx
from fastapi_hangup.testing import HangUpTransport, assert_cancelled

app = FastAPI()
ledger: list[str] = []  # stands in for a database table


@app.post("/orders/{order_id}/pay")
async def pay(order_id: str, ctx: CancelCtx) -> dict[str, str]:
    with ctx.shield():
        await anyio.sleep(0.2)  # the payment provider's round trip
        ledger.append(order_id)  # runs to completion, hang-up or not
    await anyio.sleep(0.1)  # a hang-up during the charge is delivered here
    return {"status": "paid"}


@pytest.fixture
def hangup_app() -> FastAPI:
    return app


async def test_the_charge_completes_although_the_client_left(
    hangup_client: httpx.AsyncClient, hangup_transport: HangUpTransport
) -> None:
    ledger.clear()
    with anyio.move_on_after(0.05):  # the client leaves mid-charge
        await hangup_client.post("/orders/o-1/pay")
    # The abandoning call returns once the app has ended: the shielded write is done.
    assert ledger == ["o-1"]
    result = hangup_transport.last_request
    assert_cancelled(result)  # what came after the shield was cancelled
    (record,) = result.log_records  # its one fastapi_hangup log record
    assert record.getMessage().startswith("POST /orders/{order_id}/pay 499 Client Closed")
    assert vars(record)["work_ms"] >= 200  # the extra fields: the work ran the charge
