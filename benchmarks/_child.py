"""The measuring processes of the in-process benchmarks: the script again, with ``--child``.

A benchmark measures in a process of its own, in the interpreter ``--python`` names, and for
``--tree NAME=PATH`` with another checkout first on the import path: the package
``benchmarks`` and ``fastapi_hangup`` there are that checkout's. The child prints its figures
as JSON on stdout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_child(
    script: str,
    args: Sequence[str],
    *,
    python: str = sys.executable,
    root: Path = ROOT,
    wrapper: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """Run ``python script --child *args`` in ``root``, importing ``root``'s checkout first,
    and return what it printed.

    ``wrapper`` goes before the interpreter (``valgrind ...``); ``env`` adds variables. A
    child that fails ends the run with its error output.
    """
    root = root.resolve()
    done = subprocess.run(
        [*wrapper, python, str(Path(script).resolve()), "--child", *args],
        env={**os.environ, **(env or {}), "PYTHONPATH": str(root)},
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        name = Path(script).name
        sys.exit(
            f"{name}: the measuring process failed ({done.returncode}):\n{done.stderr[-3000:]}"
        )
    return done.stdout
