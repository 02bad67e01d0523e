"""Child processes that die with the test run, however the run ends.

Every process the real-server tests start (servers, nginx, a pytest run to interrupt) goes
through :func:`spawn`. The child gets a session, hence a process group, of its own, so that
it and its workers can be stopped as a group, and only they; and the group does not outlive
the test process:

* :meth:`Child.stop`, the normal end: SIGTERM to the group, SIGKILL after a bound;
* SIGTERM to pytest: ``conftest.py`` turns it into a KeyboardInterrupt, as Ctrl-C is, so
  pytest tears the fixtures down and stops each child as above;
* pytest exits with children left (a second signal cut a teardown short): ``conftest.py``
  has :func:`kill_all` run at exit;
* pytest is killed outright (SIGKILL, the OOM killer): the parent-death signal
  (``PR_SET_PDEATHSIG``, Linux) kills the group leader, and a watchdog (``sh``, blocked
  reading a pipe that only pytest can write to) kills the rest of the group, such as
  hypercorn's worker, once the pipe closes. The parent-death signal alone is not enough:
  it is not inherited by the child's own children.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from ._events import poll

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None

#: Reads one word from the pipe: "gone" means pytest stopped the group itself. End of file
#: without it means pytest died: then kill whatever is left of the group ($1).
#: (``kill -9 -PGID``: dash, Debian's sh, takes neither ``--`` nor ``-s KILL`` before it.)
_WATCHDOG = 'read -r word; [ "$word" = gone ] || kill -9 "-$1"'

_live: dict[int, Child] = {}


class Child:
    """A started process, leader of its own process group, with the watchdog of that group."""

    def __init__(self, process: subprocess.Popen[bytes], watchdog: subprocess.Popen[bytes]):
        self.process = process
        self._watchdog = watchdog

    @property
    def pid(self) -> int:
        """The child's process id, also the id of its process group."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether the child (the group leader) is still running."""
        return not _has_exited(self.pid)

    def stop(self, grace: float = 3.0) -> None:
        """Stop the whole process group: SIGTERM, and SIGKILL if it lingers ``grace`` seconds.

        The leader is reaped only after the final SIGKILL to its group, so the group id
        cannot have been reused by an unrelated process when that signal goes out.
        """
        if self.process.returncode is not None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        poll(lambda: _has_exited(self.pid), grace, interval=0.02)
        self.kill()
        self.process.wait(timeout=grace)

    def kill(self) -> None:
        """SIGKILL the whole group at once, and let the watchdog go."""
        _signal_group(self.pid, signal.SIGKILL)  # stragglers too, such as hypercorn's worker
        _live.pop(self.pid, None)
        with contextlib.suppress(OSError):  # the watchdog is gone already
            assert self._watchdog.stdin is not None
            self._watchdog.stdin.write(b"gone\n")
            self._watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(timeout=1.0)


def spawn(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    output: IO[bytes],
) -> Child:
    """Start ``argv`` in a new session, writing stdout and stderr to ``output``.

    Raises:
        RuntimeError: if called from a thread other than the main one: the parent-death
            signal fires when the *thread* that started the child ends, not the process.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("spawn() children from the main thread: see PR_SET_PDEATHSIG")
    process = subprocess.Popen(
        argv,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_die_with(os.getpid()),
    )
    watchdog = subprocess.Popen(
        ["/bin/sh", "-c", _WATCHDOG, "watchdog", str(process.pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in pytest's group: Ctrl-C must not stop it
    )
    child = _live[process.pid] = Child(process, watchdog)
    return child


def kill_all() -> None:
    """SIGKILL every child group still running (at exit, after an interrupted teardown)."""
    for child in list(_live.values()):
        child.kill()


def _die_with(parent: int) -> Callable[[], None]:
    def in_the_child() -> None:
        # Between fork() and exec(): only async-signal-safe work, nothing that imports.
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: no signal will come
            os._exit(1)

    return in_the_child


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the exited leader a zombie: its pid (the group id) stays reserved.
    try:
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return True
    return status is not None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
