"""The Celery recipe (examples/celery_jobs.py) on a real Redis, a real worker and a real uvicorn.

``examples.task_queue:app`` hands each report to ``examples.tasks.render_report`` and waits
for it. The worker is Celery's own (``celery -A examples.tasks worker``, prefork pool, one
process), Redis is its broker and result backend; all three run as subprocesses on loopback
(see ``_spawn.py``). The job leaves a trace when it starts (``<name>.started``, its process
id) and its report when it ends (``<name>.txt``): after a hang-up the report must never
appear, and the worker's own log must say that it discarded or terminated the job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ._client import Connection
from ._events import new_request_id, poll
from ._servers import ROOT, UVICORN_HTTPTOOLS, RunningServer, run_server
from ._services import missing_services, redis
from ._spawn import Child, spawn

pytestmark = pytest.mark.e2e

JOB = "examples.tasks.render_report"
#: Hang-ups on running jobs, for the revoke-to-stop figures.
RUNS = 5


@dataclass
class Worker:
    """The Celery worker: its log, read from where the current test began."""

    log: Path
    child: Child
    offset: int = 0

    def text(self) -> str:
        with self.log.open("rb") as file:
            file.seek(self.offset)
            return file.read().decode(errors="replace")

    def received(self) -> list[str]:
        """The ids of the jobs received since the test began, in order."""
        return re.findall(rf"Task {re.escape(JOB)}\[([0-9a-f-]+)\] received", self.text())


@dataclass
class Queue:
    how: str
    port: int
    redis_url: str
    reports: Path
    worker: Worker
    web: RunningServer

    def web_problems(self) -> list[str]:
        """Lines of the web server's output that mean something went wrong."""
        bad = ("Traceback", "Exception in ASGI application", "could not revoke", "took over")
        return [line for line in self.web.log().splitlines() if line.startswith(bad)]


def _wait_ready(worker: Worker, timeout: float) -> None:
    if not poll(lambda: " ready." in worker.text() or not worker.child.alive(), timeout, 0.05):
        raise RuntimeError(f"the Celery worker did not start within {timeout} s:\n{worker.text()}")
    if not worker.child.alive():
        raise RuntimeError(f"the Celery worker exited while starting:\n{worker.text()}")


#: How the worker runs: Celery's defaults, and the page's advice for long jobs (late acks,
#: requeue on a lost worker, a fresh process per job so a late terminate hits no other job).
WORKERS = {
    "defaults": ["-A", "examples.tasks", "worker"],
    "long-jobs": ["-A", "tests.e2e.task_queue_worker", "worker", "--max-tasks-per-child=1"],
}


@contextlib.contextmanager
def celery_worker(folder: Path, env: dict[str, str], how: list[str]) -> Iterator[Worker]:
    argv = [sys.executable, "-m", "celery", *how]
    argv += ["--pool=prefork", "--concurrency=1", "--loglevel=info", "--hostname=e2e@%h"]
    log = folder / "worker.log"
    with log.open("wb") as output:
        child = spawn(argv, cwd=ROOT, env=env, output=output)
    worker = Worker(log, child)
    try:
        _wait_ready(worker, 30.0)
        yield worker
    finally:
        child.stop(grace=10.0)


@pytest.fixture(scope="module", params=list(WORKERS))
def queue(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Queue]:
    """Redis, a Celery worker with one prefork process, and uvicorn serving the app."""
    if "redis-server" in missing_services():
        if os.environ.get("FASTAPI_HANGUP_REQUIRE_SERVICES"):
            pytest.fail("the task queue tests need redis-server")
        pytest.skip("the task queue tests need redis-server")
    folder = tmp_path_factory.mktemp("queue")
    reports = folder / "reports"
    with redis(folder / "redis") as (_, redis_url):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": redis_url,
            "REPORTS_DIR": str(reports),
            "CELERY_STATE_DB": str(folder / "worker-state"),
        }
        with (
            celery_worker(folder, env, WORKERS[request.param]) as worker,
            run_server(
                UVICORN_HTTPTOOLS, "examples.task_queue:app", folder / "uvicorn.log", env=env
            ) as web,
        ):
            yield Queue(request.param, web.port, redis_url, reports, worker, web)


@pytest.fixture
def jobs(queue: Queue) -> Queue:
    queue.worker.offset = queue.worker.log.stat().st_size
    return queue


def post(port: int, target: str) -> Connection:
    connection = Connection(port, timeout=30.0)
    connection.send_request("POST", target)
    return connection


def started_pid(queue: Queue, name: str, timeout: float = 10.0) -> int:
    """The worker process that runs job ``name``, once it has started."""
    marker = queue.reports / f"{name}.started"
    assert poll(marker.exists, timeout, 0.01), f"{name} did not start:\n{queue.worker.text()}"
    assert poll(lambda: marker.read_text(), 1.0, 0.01)
    return int(marker.read_text())


def state(queue: Queue, job_id: str) -> str | None:
    """The job's state in the result backend (None: no result stored)."""
    import redis as sync_redis

    with sync_redis.Redis.from_url(queue.redis_url) as client:
        meta = client.get(f"celery-task-meta-{job_id}")
    return None if meta is None else str(json.loads(meta)["status"])


def first_seen(checks: dict[str, Callable[[], object]], timeout: float) -> dict[str, float]:
    """When each check first came true (``time.monotonic()``), polling all every millisecond."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.001)):
        for name, check in checks.items():
            if name not in seen and check():
                seen[name] = time.monotonic()
        if len(seen) == len(checks) or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    return seen


def _gone(pid: int) -> bool:
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def test_a_client_that_waits_gets_the_report(jobs: Queue) -> None:
    name = new_request_id()
    with post(jobs.port, f"/reports/{name}?seconds=0.3") as connection:
        response = connection.read_response()
    assert response.status == 200, response.body
    report = Path(response.json()["report"])
    assert report == jobs.reports / f"{name}.txt"
    assert report.read_text() == f"report {name}\n"
    (job_id,) = jobs.worker.received()
    assert f"{JOB}[{job_id}] succeeded" in jobs.worker.text()
    assert state(jobs, job_id) == "SUCCESS"


def test_a_hang_up_while_queued_means_the_job_never_runs(jobs: Queue) -> None:
    # The worker's one process is busy with another client's job, so ours waits: prefetched
    # by the worker (Celery's defaults) or still in Redis (one message per process, late acks).
    blocker, name = new_request_id(), new_request_id()
    with post(jobs.port, f"/reports/{blocker}?seconds=2") as busy:
        started_pid(jobs, blocker)
        with post(jobs.port, f"/reports/{name}?seconds=0.5") as connection:
            assert poll(lambda: waiting(jobs) == 1, 10.0, 0.01), jobs.worker.text()
            connection.hang_up()
        assert busy.read_response().status == 200  # the other client's job is untouched
    assert poll(lambda: len(jobs.worker.received()) == 2, 10.0, 0.02), jobs.worker.text()
    job_id = jobs.worker.received()[1]
    discarded = f"Discarding revoked task: {JOB}[{job_id}]"
    assert poll(lambda: discarded in jobs.worker.text(), 10.0, 0.02), jobs.worker.text()
    # Had it run, it would have ended 0.5 s after the blocker: give it far longer.
    time.sleep(2.0)
    assert not (jobs.reports / f"{name}.started").exists()
    assert not (jobs.reports / f"{name}.txt").exists()
    assert f"{JOB}[{job_id}] succeeded" not in jobs.worker.text()
    assert state(jobs, job_id) == "REVOKED"
    assert jobs.web_problems() == []


def unacknowledged(jobs: Queue) -> int:
    """Messages Redis would deliver again (kombu's ``unacked`` hash): late acks not yet sent."""
    import redis as sync_redis

    with sync_redis.Redis.from_url(jobs.redis_url) as client:
        return int(client.hlen("unacked"))


def waiting(jobs: Queue) -> int:
    """How many jobs wait behind the running one: prefetched by the worker, or in Redis."""
    import redis as sync_redis

    with sync_redis.Redis.from_url(jobs.redis_url) as client:
        in_redis = int(client.llen("celery"))
    return in_redis + len(jobs.worker.received()) - 1


def hang_up_on_a_running_job(jobs: Queue, name: str, seconds: float) -> tuple[float, float]:
    """Hang up once job ``name`` runs; return the seconds to its process's end and to the log."""
    with post(jobs.port, f"/reports/{name}?seconds={seconds}") as connection:
        pid = started_pid(jobs, name)
        job_id = jobs.worker.received()[-1]
        if jobs.how == "long-jobs":  # with late acks, a running job's message is owed an ack
            assert unacknowledged(jobs) == 1
        closed_at = connection.hang_up()
    terminating = re.compile(rf"Terminating {job_id} \((15|Signals\.SIGTERM)\)")
    seen = first_seen(
        {"exit": lambda: _gone(pid), "log": lambda: terminating.search(jobs.worker.text())},
        timeout=10.0,
    )
    assert set(seen) == {"exit", "log"}, f"pid {pid}, {seen}:\n{jobs.worker.text()}"
    assert poll(lambda: state(jobs, job_id) == "REVOKED", 5.0, 0.02)
    return seen["exit"] - closed_at, seen["log"] - closed_at


def test_a_hang_up_while_running_terminates_the_job(jobs: Queue) -> None:
    seconds = 3.0
    names = [new_request_id() for _ in range(RUNS)]
    stops = [hang_up_on_a_running_job(jobs, name, seconds) for name in names]
    to_exit, to_log = [stop[0] for stop in stops], [stop[1] for stop in stops]
    # Had they run on, each would have written its report `seconds` after it started.
    time.sleep(seconds + 2.0)
    assert [name for name in names if (jobs.reports / f"{name}.txt").exists()] == []
    # SIGTERM let each job's `finally` remove its draft before the process ended.
    assert [name for name in names if (jobs.reports / f"{name}.part").exists()] == []
    assert " succeeded " not in jobs.worker.text()
    assert len(jobs.worker.received()) == RUNS  # none came back (late acks, requeue on loss)
    assert unacknowledged(jobs) == 0  # nor will at the worker's restart: all were acknowledged
    assert jobs.web_problems() == []
    print(
        f"hang-up to the job's worker process gone: median {statistics.median(to_exit) * 1e3:.0f}"
        f" ms, max {max(to_exit) * 1e3:.0f} ms; to the worker's 'Terminating' log line: median "
        f"{statistics.median(to_log) * 1e3:.0f} ms, max {max(to_log) * 1e3:.0f} ms ({RUNS} runs, "
        f"worker: {jobs.how})"
    )
