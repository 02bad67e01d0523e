"""``examples.tasks`` configured for long jobs, as the task queue page recommends.

Late acknowledgement, one message per process, requeue when a worker process is lost: the
settings under which a terminated job could come back if Celery took its termination for a
lost worker. The e2e tests run this worker with ``--max-tasks-per-child=1`` too.
"""

from __future__ import annotations

from examples.tasks import celery

celery.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_reject_on_worker_lost=True,
)
