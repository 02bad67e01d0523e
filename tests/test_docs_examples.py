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
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "examples/test_your_app.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout


async def test_decorated_endpoint_stops_on_hang_up() -> None:
    from examples.decorator import app

    result = await HangUpClient(app).get("/search?q=x", hang_up_after=0.05)
    assert result.cancelled
    assert result.messages == []


async def test_decorated_sync_endpoint_returns_early() -> None:
    from examples.decorator import app

    result = await HangUpClient(app).get("/export?rows=1000", hang_up_after=0.1)
    assert result.cancelled
    assert result.elapsed < 5  # 1000 rows would take 10 s


def test_decorated_operations_are_marked_in_openapi() -> None:
    from examples.decorator import app

    paths = app.openapi()["paths"]
    assert paths["/search"]["get"]["x-cancel-on-disconnect"]["methods"] == ["GET"]
    assert "499" in paths["/export"]["get"]["responses"]


async def test_route_class_stops_a_get_but_not_a_post() -> None:
    from examples.route_class import app, orders

    client = HangUpClient(app)
    orders.clear()
    report = await client.get("/reports/q3", hang_up_after=0.05)
    order = await client.post("/orders?item=book", hang_up_after=0.05)
    assert report.cancelled
    assert order.context is None  # POST is not guarded: the order is written
    assert orders == ["book"]


async def test_route_class_opt_in_and_opt_out() -> None:
    from examples.route_class import app

    client = HangUpClient(app)
    preview = await client.post("/previews?item=x", hang_up_after=0.05)
    health = await client.get("/health")
    assert preview.cancelled
    assert health.status_code == 200
    assert health.context is None


async def test_route_class_stops_a_streaming_body() -> None:
    from examples.route_class import app

    result = await HangUpClient(app).get("/reports/q3/stream", hang_up_after_body_chunks=3)
    assert result.cancelled
    assert result.sent_after_hang_up == []
    assert result.elapsed < 5  # 1000 lines would take 10 s


async def test_router_policy_cancels_posts_and_tags_them() -> None:
    from examples.router_policy import app

    result = await HangUpClient(app).post("/translations?text=abc", hang_up_after=0.05)
    operation = app.openapi()["paths"]["/translations"]["post"]
    assert result.cancelled
    assert operation["tags"] == ["cancellable"]


async def test_sse_generator_endpoint_stops_on_hang_up() -> None:
    pytest.importorskip("fastapi.sse")
    from examples.sse import app, produced

    produced.clear()
    result = await HangUpClient(app).get("/ticks", hang_up_after_body_chunks=3)
    assert result.cancelled
    assert len(produced) < 100  # far fewer than the 1000 ticks: the generator stopped


async def test_deadline_answers_504_when_the_budget_runs_out() -> None:
    from examples.deadlines import app

    result = await HangUpClient(app).get("/search?q=" + "x" * 100)  # 5 s of work
    assert result.status_code == 504
    assert b"Deadline exceeded" in result.body


async def test_deadline_header_shortens_the_budget() -> None:
    from examples.deadlines import app

    client = HangUpClient(app)
    quick = await client.get("/search?q=abc", headers={"x-envoy-expected-rq-timeout-ms": "1000"})
    short = await client.get("/search?q=abc", headers={"x-envoy-expected-rq-timeout-ms": "50"})
    assert quick.status_code == 200
    assert short.status_code == 504


async def test_on_cancel_revokes_the_job() -> None:
    from examples.on_cancel import app, jobs

    jobs.clear()
    result = await HangUpClient(app).post("/renders?name=intro", hang_up_after=0.05)
    assert result.cancelled
    assert jobs == {"job-1": "revoked"}


async def test_thread_work_checks_and_stops() -> None:
    from examples.offload import app

    result = await HangUpClient(app).post("/thumbnails?count=500", hang_up_after=0.1)
    assert result.cancelled
    assert result.messages == []
    assert result.elapsed < 5  # 500 images would take 10 s


async def test_process_work_returns_its_result() -> None:
    from examples.offload import app

    result = await HangUpClient(app, timeout=60).get("/primes?limit=100")
    assert result.status_code == 200
    assert result.body == b'{"primes":25}'


async def test_grace_lets_the_export_stop_between_pages() -> None:
    from examples.grace import app, pages_written

    pages_written.clear()
    result = await HangUpClient(app).post("/exports?pages=100", hang_up_after=0.1)
    assert result.cancelled
    assert 0 < len(pages_written) < 100


@pytest.mark.parametrize("path", ["/search", "/search-everywhere"])
async def test_cleanup_that_awaits_after_a_hang_up(anyio_backend: object, path: str) -> None:
    from examples.cleanup import app, audit

    audit.clear()
    result = await HangUpClient(app).get(f"{path}?q=x", hang_up_after=0.05)

    assert result.cancelled
    lost = anyio_backend == "trio" and path == "/search"  # trio: shield an await in finally
    assert audit == ([] if lost else ["search x"])
