"""An interrupted test run leaves no server behind: SIGTERM, Ctrl-C (SIGINT) or SIGKILL.

Each test runs pytest on ``_interrupted_run.py`` as a child process, waits until that run
has a server (and nginx) up and has written their process ids, signals the run, and checks
that every one of those processes is gone within a bound. SIGTERM and SIGINT must end the
run the way Ctrl-C does (exit status 2, fixtures torn down); SIGKILL leaves no teardown at
all, so there the parent-death signal and the watchdog of ``_spawn.py`` do the work.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from tests._processes import is_gone, kill_leftovers

from ._events import poll
from ._interrupted_run import PIDS_ENV, SERVER_ENV
from ._matrix import MATRIX_ENV
from ._servers import HYPERCORN_ASYNCIO, ROOT, UVICORN_HTTPTOOLS, Server
from ._spawn import spawn

pytestmark = pytest.mark.e2e

RUN = Path(__file__).with_name("_interrupted_run.py")
#: Generous bounds: a pytest start with a server takes a few seconds on a loaded machine.
STARTED_WITHIN = 30.0
GONE_WITHIN = 10.0


@pytest.mark.parametrize(
    ("spec", "signum"),
    [
        (HYPERCORN_ASYNCIO, signal.SIGTERM),
        (UVICORN_HTTPTOOLS, signal.SIGINT),
        (HYPERCORN_ASYNCIO, signal.SIGKILL),
    ],
    ids=lambda value: value.name if isinstance(value, Server | signal.Signals) else None,
)
def test_interrupted_run_leaves_no_process_behind(
    spec: Server, signum: signal.Signals, tmp_path: Path
) -> None:
    missing = spec.missing()
    if missing:
        pytest.skip(f"{spec.name} needs {', '.join(missing)}")
    pids_file = tmp_path / "pids.json"
    argv = [
        *(sys.executable, "-m", "pytest", str(RUN), "-q", "--no-cov", "-p", "no:randomly"),
        f"--basetemp={tmp_path / 'run'}",  # not pytest's shared folder: its cleanup is ours
    ]
    # Not $FASTAPI_HANGUP_MATRIX: the run would truncate this run's matrix results.
    env = {name: value for name, value in os.environ.items() if name != MATRIX_ENV}
    env |= {PIDS_ENV: str(pids_file), SERVER_ENV: spec.name}
    processes: list[psutil.Process] = []
    with (tmp_path / "run.log").open("wb") as output:
        run = spawn(argv, cwd=ROOT, env=env, output=output)
    try:
        assert poll(lambda: pids_file.exists() or not run.alive(), STARTED_WITHIN)
        assert pids_file.exists(), (tmp_path / "run.log").read_text()
        leaders = json.loads(pids_file.read_text())
        processes = _with_descendants(leaders)
        if spec is HYPERCORN_ASYNCIO:  # a worker: a process the parent-death signal misses
            assert len(processes) > len(leaders), processes

        os.kill(run.pid, signum)
        run.process.wait(timeout=GONE_WITHIN)
        gone = poll(lambda: all(map(is_gone, processes)), GONE_WITHIN)
    finally:
        run.stop()
        kill_leftovers(processes)

    log = (tmp_path / "run.log").read_text()
    print(f"----- the interrupted run -----\n{log}")
    assert gone, f"left running: {[p for p in processes if not is_gone(p)]}"
    if signum == signal.SIGKILL:
        assert run.process.returncode == -signal.SIGKILL
    else:
        assert run.process.returncode == pytest.ExitCode.INTERRUPTED, log
        assert "KeyboardInterrupt" in log


def _with_descendants(pids: list[int]) -> list[psutil.Process]:
    """The processes ``pids`` and all their descendants, recorded while they run."""
    found = []
    for pid in pids:
        process = psutil.Process(pid)
        found += [process, *process.children(recursive=True)]
    return found
