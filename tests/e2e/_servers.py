"""Start a real ASGI server on loopback for one test, and make sure it is gone afterwards.

A :class:`Server` is a name and a command line; adding a server is one line in
:data:`SERVERS`. :func:`run_server` starts it in a session of its own (so its workers can
be stopped as a group, and only they), waits until it answers HTTP, and on exit stops the
whole group: SIGTERM, then SIGKILL after a bound, also when the test failed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._events import poll

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """How to start one server configuration.

    ``argv`` is a shell-like template with the placeholders ``{python}`` (this venv's
    interpreter), ``{bin}`` (this venv's scripts folder), ``{app}`` (the import string),
    ``{host}`` and ``{port}``. ``needs`` names the modules it takes; without them the test
    is skipped instead of failing.
    """

    name: str
    argv: str
    needs: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name

    def command(self, app: str, port: int) -> list[str]:
        """The command line that serves ``app`` on ``port``."""
        values = {
            "python": sys.executable,
            "bin": str(Path(sys.executable).parent),
            "app": app,
            "host": HOST,
            "port": str(port),
        }
        return [part.format(**values) for part in shlex.split(self.argv)]

    def missing(self) -> list[str]:
        """The modules in :attr:`needs` that are not installed."""
        return [name for name in self.needs if importlib.util.find_spec(name) is None]


_UVICORN = "{python} -m uvicorn {app} --host {host} --port {port} --log-level info"
_HYPERCORN = "{python} -m hypercorn {app} --bind {host}:{port} --access-logfile - --error-logfile -"

UVICORN_HTTPTOOLS = Server(
    "uvicorn-httptools", f"{_UVICORN} --http httptools --loop uvloop", ("httptools", "uvloop")
)
UVICORN_H11 = Server("uvicorn-h11", f"{_UVICORN} --http h11 --loop asyncio", ("h11",))
HYPERCORN_TRIO = Server("hypercorn-trio", f"{_HYPERCORN} -k trio", ("trio",))
HYPERCORN_ASYNCIO = Server("hypercorn-asyncio", f"{_HYPERCORN} -k asyncio")

#: Every server the core promises are checked on. Adding one is one line, for example
#:     Server("granian", "{bin}/granian --interface asgi --workers 1 --host {host}"
#:            " --port {port} {app}", ("granian",))
#:     Server("daphne", "{bin}/daphne -b {host} -p {port} {app}", ("daphne",))
#:     Server("gunicorn-uvicorn", "{python} -m gunicorn -w 1 -k uvicorn_worker.UvicornWorker"
#:            " -b {host}:{port} {app}", ("gunicorn", "uvicorn_worker"))
#: hypercorn serves HTTP/2 (h2c, prior knowledge) on the same command line: that takes an h2
#: client, not another server. A proxy in front (nginx) is a second process: a ``front``
#: command on Server, started after the server and given its port, would fit here.
SERVERS = (UVICORN_HTTPTOOLS, UVICORN_H11, HYPERCORN_TRIO, HYPERCORN_ASYNCIO)


class RunningServer:
    """A started server: its port, its process, and everything it wrote to stdout and stderr."""

    def __init__(self, server: Server, process: subprocess.Popen[bytes], port: int, log: Path):
        self.server = server
        self.port = port
        self.log_path = log
        self._process = process

    def __repr__(self) -> str:
        return f"<RunningServer {self.server.name} pid={self.pid} port={self.port}>"

    @property
    def pid(self) -> int:
        """The server's main process, also the id of its process group."""
        return self._process.pid

    def alive(self) -> bool:
        """Whether the main process is still running."""
        return not _has_exited(self.pid)

    def log(self) -> str:
        """Everything the server (and the app in it) wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, grace: float = 3.0) -> None:
        """Stop the whole process group: SIGTERM, and SIGKILL if it lingers ``grace`` seconds.

        The leader is reaped only after the final SIGKILL to its group, so the group id
        cannot have been reused by an unrelated process when that signal goes out.
        """
        if self._process.returncode is not None:
            return
        _signal_group(self.pid, signal.SIGTERM)
        poll(lambda: _has_exited(self.pid), grace, interval=0.02)
        _signal_group(self.pid, signal.SIGKILL)  # stragglers too, such as hypercorn's worker
        self._process.wait(timeout=grace)


@contextlib.contextmanager
def run_server(
    server: Server,
    app: str,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    start_timeout: float = 20.0,
) -> Iterator[RunningServer]:
    """Serve ``app`` with ``server`` on a free loopback port while the block runs.

    Args:
        server: the server configuration.
        app: the ASGI import string, e.g. ``"tests.e2e.app:app"`` (imported from the
            project root).
        log: the file that collects the server's stdout and stderr.
        env: extra environment variables for the server.
        ready_path: the server is ready once a GET of this path gets any HTTP response.
        start_timeout: seconds to wait for that.

    Raises:
        RuntimeError: if the server exits or does not answer within ``start_timeout``.
    """
    port = free_port()
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            server.command(app, port),
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = RunningServer(server, process, port, log)
    try:
        _wait_ready(running, ready_path, start_timeout)
        yield running
    finally:
        running.stop()


def free_port() -> int:
    """A loopback port that was free a moment ago (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(running: RunningServer, path: str, timeout: float) -> None:
    def answers() -> bool:
        if not running.alive():
            raise RuntimeError(f"{running.server.name} exited while starting:\n{running.log()}")
        return _answers_http(running.port, path)

    if not poll(answers, timeout, interval=0.05):
        raise RuntimeError(
            f"{running.server.name} did not answer on port {running.port} within {timeout} s:\n"
            f"{running.log()}"
        )


def _answers_http(port: int, path: str) -> bool:
    # The port accepts connections before hypercorn's worker process has loaded the app;
    # only an HTTP response says the app is ready.
    request = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=1.0) as sock:
            sock.sendall(request.encode())
            head = b""
            for _ in range(9):  # one byte per recv at worst
                chunk = sock.recv(9 - len(head))
                head += chunk
                if not chunk or len(head) == 9:
                    break
            return head == b"HTTP/1.1 "
    except OSError:
        return False


def _has_exited(pid: int) -> bool:
    # WNOWAIT leaves the exited leader a zombie: its pid (the group id) stays reserved.
    try:
        status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return True
    return status is not None


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
