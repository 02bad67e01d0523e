"""A recipe: run a Celery task for a request, and revoke it if the request is cancelled.

Copy this file into your project; it needs Celery (and a result backend), not more.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import ParamSpec, TypeVar

import anyio
import anyio.to_thread
from celery import Task
from celery.result import AsyncResult
from celery.utils import uuid

from fastapi_hangup import CancelOnDisconnect

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger(__name__)

#: How often the result backend is asked for the job's state: soon at first, then less often.
FIRST_POLL, LAST_POLL = 0.01, 0.25
#: The longest the revoke (a message to every worker, through the broker) may take.
REVOKE_TIMEOUT = 5.0
#: Whether a running job's worker process is terminated (False: it runs to its end).
TERMINATE = True
#: What that process gets: SIGTERM (the job's `finally` blocks run), or "SIGKILL".
TERMINATE_SIGNAL = "SIGTERM"


async def run_job(
    ctx: CancelOnDisconnect, task: Task[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Enqueue ``task(*args, **kwargs)``, wait for its result, and return it.

    When the request is cancelled (the client hung up, its deadline passed, the server shuts
    down) or the wait fails, the job is revoked: a queued job never runs, a running one has
    its worker process terminated. With a deadline, the job also expires with it, so a worker
    that missed the revoke still discards it.

    Raises:
        Exception: whatever the task raised (Celery re-raises it here), or
            ``celery.exceptions.TaskRevokedError`` if someone else revoked it.
        ValueError: for a task with ``ignore_result=True``: its result never arrives.
    """
    if task.ignore_result:
        raise ValueError(
            f"{task.name} ignores its result (ignore_result=True), so waiting for it would "
            "never end: drop ignore_result for this task, or send it without waiting."
        )
    job: AsyncResult[R] = task.AsyncResult(uuid())  # its id is known before it is sent
    finished = False
    try:
        send = partial(_send, task, job.id, args, kwargs, ctx.remaining())
        await anyio.to_thread.run_sync(send)  # a blocking publish to the broker
        interval = FIRST_POLL
        while not await anyio.to_thread.run_sync(job.ready):
            await anyio.sleep(interval)  # the hang-up arrives here, as a cancellation
            interval = min(interval * 2, LAST_POLL)
        finished = True
        return await anyio.to_thread.run_sync(job.get)  # ready: no wait, no subscription
    finally:
        if not finished:
            await _revoke(job)


def _send(
    task: Task[P, R],
    job_id: str,
    args: tuple[object, ...],
    kwargs: dict[str, object],
    budget: float,
) -> None:
    if math.isinf(budget):  # no deadline
        task.apply_async(args, kwargs, task_id=job_id)
    else:
        task.apply_async(args, kwargs, task_id=job_id, expires=budget)


async def _revoke(job: AsyncResult[R]) -> None:
    # Shielded, so that a cancellation (even a level-triggered one, on trio) cannot cut it
    # short; bounded, so that an unreachable broker cannot hold the request. The thread is
    # abandoned at the bound, not waited for: Python cannot stop a blocking call.
    revoke = partial(job.revoke, terminate=TERMINATE, signal=TERMINATE_SIGNAL)
    with anyio.CancelScope(shield=True, deadline=anyio.current_time() + REVOKE_TIMEOUT) as scope:
        try:
            await anyio.to_thread.run_sync(revoke, abandon_on_cancel=True)
        except Exception:  # the broker is down: say so, and let the cancellation go on
            logger.exception("could not revoke Celery job %s", job.id)
    if scope.cancelled_caught:
        logger.warning("revoking Celery job %s took over %g s", job.id, REVOKE_TIMEOUT)
