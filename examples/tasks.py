"""The Celery side: a worker renders reports. Run it with a prefork pool, the default:

    celery -A examples.tasks worker --pool=prefork --concurrency=4 --loglevel=info

``REDIS_URL`` is the broker and the result backend; reports go to ``REPORTS_DIR``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
REPORTS = Path(os.environ.get("REPORTS_DIR", "reports"))

celery = Celery("reports", broker=REDIS_URL, backend=REDIS_URL)  # a backend, to wait for results
celery.conf.update(
    worker_state_db=os.environ.get("CELERY_STATE_DB"),  # revokes outlive a worker restart
    broker_connection_retry_on_startup=True,
)


@celery.task
def render_report(name: str, seconds: float) -> str:
    """Render a report for ``seconds``, then publish it; a terminated job publishes nothing."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"{name}.started").write_text(str(os.getpid()))
    draft, report = REPORTS / f"{name}.part", REPORTS / f"{name}.txt"
    try:
        draft.write_text(f"report {name}\n")
        time.sleep(seconds)  # the heavy part
        draft.rename(report)
    finally:
        draft.unlink(missing_ok=True)  # runs on SIGTERM too: no half-written report is left
    return str(report)
