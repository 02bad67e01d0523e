"""examples/celery_jobs.py in memory: when it revokes, how, and when it leaves the job alone.

A fake task and result stand in for Celery's (the real broker, worker and result backend
are in tests/e2e/test_task_queue_e2e.py): the fake records what the recipe asks of it, and
the test decides when the job finishes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any, cast

import anyio
import pytest

pytest.importorskip("celery", reason="Celery is a dev dependency only")

from celery import Task
from fastapi import Depends, FastAPI

from examples import celery_jobs
from examples.celery_jobs import run_job
from fastapi_hangup import CancelCtx, CancelOnDisconnect, cancel_ctx_with
from fastapi_hangup.testing import HangUpClient

pytestmark = pytest.mark.anyio


class FakeJob:
    """An AsyncResult: ready once ``finish()`` is called, and revocable."""

    def __init__(self, job_id: str) -> None:
        self.id = job_id
        self.sent: dict[str, Any] | None = None
        self.revoked: list[dict[str, Any]] = []
        self._outcome: Callable[[], object] | None = None
        self.revoke_blocks = threading.Event()
        self.revoke_blocks.set()
        self.revoke_error: Exception | None = None

    def finish(self, outcome: Callable[[], object]) -> None:
        self._outcome = outcome

    def ready(self) -> bool:
        return self._outcome is not None

    def get(self) -> object:
        assert self._outcome is not None, "get() before the job was ready"
        return self._outcome()

    def revoke(self, **options: Any) -> None:
        self.revoked.append(options)
        self.revoke_blocks.wait(10)
        if self.revoke_error is not None:
            raise self.revoke_error


class FakeTask:
    """A Celery task: ``apply_async`` records the message, ``AsyncResult`` hands out the job."""

    name = "tests.render"

    def __init__(self) -> None:
        self.jobs: list[FakeJob] = []
        self.ignore_result = False
        self.prepare: Callable[[FakeJob], None] = lambda job: None

    def AsyncResult(self, job_id: str) -> FakeJob:
        self.jobs.append(FakeJob(job_id))
        self.prepare(self.jobs[-1])
        return self.jobs[-1]

    def apply_async(
        self, args: tuple[object, ...], kwargs: dict[str, object], **options: Any
    ) -> None:
        job = self.jobs[-1]
        assert options["task_id"] == job.id
        job.sent = {"args": args, "kwargs": kwargs, **options}


fake = FakeTask()
render = cast("Task[[str, float], str]", fake)
app = FastAPI()
BudgetCtx = Annotated[CancelOnDisconnect, Depends(cancel_ctx_with(deadline=0.2))]


@app.post("/render")
async def render_endpoint(name: str, ctx: CancelCtx) -> dict[str, str]:
    return {"report": await run_job(ctx, render, name, 1.0)}


@app.post("/budget")
async def budget_endpoint(name: str, ctx: BudgetCtx) -> dict[str, str]:
    return {"report": await run_job(ctx, render, name, 1.0)}


@pytest.fixture(autouse=True)
def fresh_task() -> None:
    fake.jobs.clear()


async def finish_soon(outcome: Callable[[], object], delay: float = 0.05) -> None:
    await anyio.sleep(delay)
    fake.jobs[-1].finish(outcome)


async def test_the_result_comes_back_and_nothing_is_revoked() -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_soon, lambda: "/reports/a.txt")
        result = await HangUpClient(app).post("/render?name=a")
    assert result.status_code == 200
    assert result.body == b'{"report":"/reports/a.txt"}'
    (job,) = fake.jobs
    assert job.sent == {"args": ("a", 1.0), "kwargs": {}, "task_id": job.id}  # no expiry
    assert job.revoked == []


async def test_a_hang_up_revokes_and_terminates_the_job() -> None:
    result = await HangUpClient(app).post("/render?name=b", hang_up_after=0.05)
    assert result.cancelled
    (job,) = fake.jobs
    assert job.sent is not None
    assert job.revoked == [{"terminate": True, "signal": "SIGTERM"}]


async def test_a_failed_job_raises_its_error_and_is_not_revoked() -> None:
    def failed() -> object:
        raise RuntimeError("the report template is missing")

    async with anyio.create_task_group() as tg:
        tg.start_soon(finish_soon, failed)
        with pytest.raises(RuntimeError, match="template is missing"):
            await HangUpClient(app).post("/render?name=c")
    assert fake.jobs[0].revoked == []


async def test_a_deadline_expires_the_job_and_revokes_it() -> None:
    result = await HangUpClient(app).post("/budget?name=d")
    assert result.status_code == 504
    (job,) = fake.jobs
    assert job.sent is not None
    assert 0 < job.sent["expires"] <= 0.2  # a worker that missed the revoke still drops it
    assert job.revoked == [{"terminate": True, "signal": "SIGTERM"}]


async def test_a_revoke_that_hangs_is_abandoned_after_its_timeout(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(celery_jobs, "REVOKE_TIMEOUT", 0.2)
    monkeypatch.setattr(fake, "prepare", lambda job: job.revoke_blocks.clear())
    with caplog.at_level(logging.WARNING, logger="examples.celery_jobs"):
        result = await HangUpClient(app).post("/render?name=e", hang_up_after=0.05)
    (job,) = fake.jobs
    job.revoke_blocks.set()  # let the abandoned thread go
    assert result.cancelled
    assert result.elapsed < 5
    assert job.revoked == [{"terminate": True, "signal": "SIGTERM"}]
    assert f"revoking Celery job {job.id} took over 0.2 s" in caplog.text


async def test_a_broker_error_while_revoking_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(job: FakeJob) -> None:
        job.revoke_error = ConnectionError("the broker is down")

    monkeypatch.setattr(fake, "prepare", broker_down)
    with caplog.at_level(logging.ERROR, logger="examples.celery_jobs"):
        result = await HangUpClient(app).post("/render?name=f", hang_up_after=0.05)
    (job,) = fake.jobs
    assert result.cancelled
    assert result.messages == []
    assert f"could not revoke Celery job {job.id}" in caplog.text


async def test_a_task_that_ignores_its_result_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fake, "ignore_result", True)
    with pytest.raises(ValueError, match=r"tests.render ignores its result.*drop ignore_result"):
        await HangUpClient(app).post("/render?name=g")
    assert fake.jobs == []  # nothing was sent


async def test_without_terminate_a_running_job_is_only_revoked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(celery_jobs, "TERMINATE", False)
    result = await HangUpClient(app).post("/render?name=h", hang_up_after=0.05)
    assert result.cancelled
    assert fake.jobs[0].revoked == [{"terminate": False, "signal": "SIGTERM"}]
