"""Find anyio's worker processes with psutil, and tell when one is gone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import psutil

#: What a worker process of anyio's pool has on its command line (``-m anyio.to_process``).
WORKER_MARK = "anyio.to_process"


def pool_workers(parent: psutil.Process) -> list[psutil.Process]:
    """The worker processes of anyio's pool among ``parent``'s descendants."""
    found = []
    for child in parent.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if WORKER_MARK in child.cmdline():
                found.append(child)
    return found


def is_gone(process: psutil.Process) -> bool:
    """Whether ``process`` is dead: reaped already, or a zombie waiting to be reaped.

    ``psutil.Process.is_running()`` also compares the creation time, so a recycled pid
    does not count as the same process.
    """
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_leftovers(processes: Iterable[psutil.Process]) -> None:
    """Kill those of ``processes`` that still run (cleanup after a failed test)."""
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if not is_gone(process):
                process.kill()
