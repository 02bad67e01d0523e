"""An endpoint that hands its work to a Celery worker and waits: a hang-up revokes the job.

    uvicorn examples.task_queue:app

with a worker running ``examples.tasks`` (see there) and the same ``REDIS_URL``.
"""

from __future__ import annotations

from fastapi import FastAPI

from examples.celery_jobs import run_job
from examples.tasks import render_report
from fastapi_hangup import CancelCtx

app = FastAPI()


@app.post("/reports/{name}")
async def report(name: str, seconds: float, ctx: CancelCtx) -> dict[str, str]:
    # Queued: it never runs. Running: its worker process is terminated.
    return {"report": await run_job(ctx, render_report, name, seconds)}
