"""The demo's app: two endpoints do the same slow work, and only the guarded one stops on a hang-up.

``examples/demo.py`` serves it with uvicorn, hangs up on both endpoints and reads ``/stats``.
The one difference between the endpoints is the ``ctx: CancelCtx`` parameter.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, Request

from fastapi_hangup import CancelCtx

STEPS = 20  # units of work per request
STEP_SECONDS = 0.1

# fastapi-hangup logs every abandoned request as "499 Client Closed Request" (at INFO).
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

app = FastAPI()


@dataclass
class Job:
    """What one request's work did; the demo reads these through ``GET /stats``."""

    endpoint: str
    client_port: int
    started_at: float = field(default_factory=time.monotonic)
    units_done: int = 0
    ended_at: float | None = None  # time.monotonic() when the work finished or was stopped


jobs: list[Job] = []


async def start_job(request: Request) -> Job:
    port = request.client.port if request.client else 0
    job = Job(endpoint=request.url.path, client_port=port)
    jobs.append(job)
    return job


CurrentJob = Annotated[Job, Depends(start_job)]


async def expensive_work(job: Job) -> None:
    """Stand-in for an LLM streaming tokens, or a SQL query paging through rows."""
    try:
        for _ in range(STEPS):
            await anyio.sleep(STEP_SECONDS)  # each await is where a hang-up can stop the work
            job.units_done += 1
    finally:
        # Runs on cancellation too: this is where you would close a cursor or a stream.
        job.ended_at = time.monotonic()


@app.get("/guarded")
async def guarded(ctx: CancelCtx, job: CurrentJob) -> dict[str, int]:
    await expensive_work(job)  # stops at its next await once the client hangs up
    return {"units": job.units_done}


@app.get("/unguarded")
async def unguarded(job: CurrentJob) -> dict[str, int]:
    await expensive_work(job)  # runs all STEPS, for nobody, after the client hangs up
    return {"units": job.units_done}


@app.get("/stats")
async def stats() -> dict[str, Any]:
    return {"steps": STEPS, "jobs": [asdict(job) for job in jobs]}
