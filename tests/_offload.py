"""Module-level work for ``ctx.run_in_process``: it must pickle, so it cannot live in a test.

anyio's worker processes run ``python -m anyio.to_process``; they find these functions by
their qualified name, through the ``sys.path`` the parent hands them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def spin(seconds: float, pid_file: str | None = None) -> int:
    """Burn one CPU for ``seconds`` (no await, no check: only a kill stops it).

    With ``pid_file``, first write this process's id there, so the test knows which worker
    runs the work and that it has started.
    """
    if pid_file is not None:  # written whole, then renamed: a reader never sees half of it
        Path(f"{pid_file}.tmp").write_text(str(os.getpid()))
        os.replace(f"{pid_file}.tmp", pid_file)
    ends = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < ends:
        turns += 1
    return turns


def square(number: int) -> int:
    """A quick result to check that the pool still works."""
    return number * number


def worker_state(pid_file: str) -> str:
    """What became of the worker that wrote ``pid_file``, as the kernel tells it right now.

    ``"gone"`` (reaped), ``"zombie"`` (dead, not yet reaped), ``"no pid"`` (the work never
    started), or the state letter of a live process (``R``, ``S``, ``D``...). The app asks
    this the moment ``ctx.run_in_process`` gives up on a hang-up: the promise is that the
    worker is dead by then, which no poll from the test's side, however long, can tell.
    """
    try:
        pid = int(Path(pid_file).read_text())
    except FileNotFoundError:
        return "no pid"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    state = stat.rpartition(")")[2].split()[0]  # the name, in parentheses, may hold spaces
    return "zombie" if state in ("Z", "X") else state
