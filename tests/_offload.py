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
