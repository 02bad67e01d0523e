"""Every file under examples/ that the docs include is exercised here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fastapi_hangup.testing import HangUpClient

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio


async def test_quickstart_report_completes_when_the_client_stays() -> None:
    from examples.quickstart import app

    result = await HangUpClient(app).get("/report?rows=3")
    assert result.status_code == 200
    assert result.body == b'{"rows":3,"total":5}'


async def test_quickstart_report_stops_on_hang_up() -> None:
    from examples.quickstart import app

    result = await HangUpClient(app).get("/report?rows=1000", hang_up_after=0.05)
    assert result.cancelled
    assert result.elapsed < 5  # 1000 rows would take 10 s


async def test_long_form_is_the_same_as_the_alias() -> None:
    from examples.long_form import app

    result = await HangUpClient(app).get("/search?q=x", hang_up_after=0.05)
    assert result.cancelled
    assert result.messages == []


async def test_shielded_charge_completes_despite_the_hang_up() -> None:
    from examples.shield import app, ledger

    result = await HangUpClient(app).post("/orders/o-1/pay", hang_up_after=0.05)
    assert result.cancelled
    assert "o-1" in ledger
    assert result.messages == []


async def test_sync_endpoint_returns_early_on_hang_up() -> None:
    from examples.sync_endpoint import app

    result = await HangUpClient(app).get("/crunch?steps=500", hang_up_after=0.1)
    assert result.cancelled
    assert result.elapsed < 5  # 500 steps would take 10 s


def test_the_testing_example_passes_under_pytest() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "examples/test_your_app.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout

