"""``worker_state()``: how the offload app tells a live worker from a dead one (the e2e kill
test relies on it, so it must be able to say "still runs")."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests._offload import worker_state


def _child(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    pid_file = tmp_path / "worker.pid"
    pid_file.write_text(str(child.pid))
    return child, str(pid_file)


def test_a_live_worker_is_neither_gone_nor_a_zombie(tmp_path: Path) -> None:
    child, pid_file = _child(tmp_path)
    try:
        assert worker_state(pid_file) in ("R", "S", "D")
    finally:
        child.kill()
        child.wait(timeout=5)


def test_a_killed_worker_is_a_zombie_until_reaped_then_gone(tmp_path: Path) -> None:
    child, pid_file = _child(tmp_path)
    child.kill()
    try:
        ends = time.monotonic() + 5.0  # the kernel tears it down: moments, even under load
        for _ in range(500):
            if worker_state(pid_file) == "zombie" or time.monotonic() > ends:
                break
            time.sleep(0.01)
        assert worker_state(pid_file) == "zombie"
    finally:
        child.wait(timeout=5)
    assert worker_state(pid_file) == "gone"


def test_no_pid_file_means_the_work_never_started(tmp_path: Path) -> None:
    assert worker_state(str(tmp_path / "missing.pid")) == "no pid"
