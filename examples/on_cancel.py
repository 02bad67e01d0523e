"""Tell someone else to stop: revoke a queued job when the request is cancelled."""

from __future__ import annotations

import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx

app = FastAPI()
jobs: dict[str, str] = {}  # stands in for a task queue (Celery, RQ, arq, ...)


async def enqueue(name: str) -> str:
    job_id = f"job-{len(jobs) + 1}"
    jobs[job_id] = "queued"
    return job_id


async def revoke(job_id: str) -> None:
    await anyio.sleep(0.01)  # the queue's API call
    jobs[job_id] = "revoked"


async def wait_for(job_id: str) -> str:
    await anyio.sleep(10)  # the worker renders the video
    return "done"


@app.post("/renders")
async def render(name: str, ctx: CancelCtx) -> dict[str, str]:
    job_id = await enqueue(name)
    ctx.on_cancel(lambda: revoke(job_id))  # runs only if the request is cancelled
    return {"job": job_id, "status": await wait_for(job_id)}
