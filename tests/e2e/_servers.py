"""Start real ASGI servers on loopback for the tests, and make sure they are gone afterwards.

A :class:`Server` is a name and a command line; adding a server is one line in
:data:`SERVERS`. :func:`run_server` starts it in a process group of its own (see
``_spawn.py``: the group dies with the test run, however the run ends), waits until it
answers HTTP, and on exit stops the whole group: SIGTERM, then SIGKILL after a bound, also
when the test failed.

Starting a server takes one to two seconds, so a :class:`ServerPool` keeps the last one
running for the next test that asks for the same server and app, and each test gets a
:class:`ServerView`: the server, and the part of its output written since the test began.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests._helpers import free_port

from ._events import EVENTS_ENV, FILES_ENV, EventLog, poll
from ._spawn import Child, spawn

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
# One worker process, and granian's default loop ("auto": uvloop when installed, as here).
_GRANIAN = (
    "{bin}/granian --interface asgi --workers 1 --host {host} --port {port} --access-log {app}"
)


def _uvicorn_worker() -> str:
    # uvicorn.workers is deprecated in favour of the uvicorn-worker package: prefer the
    # package when it is installed, else the module (still shipped by uvicorn 0.54).
    if importlib.util.find_spec("uvicorn_worker") is not None:
        return "uvicorn_worker"
    return "uvicorn.workers"


UVICORN_HTTPTOOLS = Server(
    "uvicorn-httptools", f"{_UVICORN} --http httptools --loop uvloop", ("httptools", "uvloop")
)
UVICORN_H11 = Server("uvicorn-h11", f"{_UVICORN} --http h11 --loop asyncio", ("h11",))
HYPERCORN_ASYNCIO = Server("hypercorn-asyncio", f"{_HYPERCORN} -k asyncio")
HYPERCORN_TRIO = Server("hypercorn-trio", f"{_HYPERCORN} -k trio", ("trio",))
GRANIAN = Server("granian", _GRANIAN, ("granian",))
DAPHNE = Server("daphne", "{bin}/daphne -b {host} -p {port} {app}", ("daphne",))
#: Two workers share the socket: a request may land on either (the RSS test asks which).
#: gunicorn 23+ would open a control socket in ~/.gunicorn: not for a test run.
GUNICORN_UVICORN = Server(
    "gunicorn-uvicorn",
    f"{{python}} -m gunicorn -k {_uvicorn_worker()}.UvicornWorker -w 2 -b {{host}}:{{port}}"
    " --access-logfile - --graceful-timeout 2 --no-control-socket {app}",
    ("gunicorn", _uvicorn_worker()),
)

#: Every server the core promises are checked on, over HTTP/1.1.
SERVERS = (
    UVICORN_HTTPTOOLS,
    UVICORN_H11,
    HYPERCORN_ASYNCIO,
    HYPERCORN_TRIO,
    GRANIAN,
    DAPHNE,
    GUNICORN_UVICORN,
)

#: The servers that speak HTTP/2 over cleartext with prior knowledge (h2c), on the same
#: command line as for HTTP/1.1. They get names of their own: a column of the matrix each.
#: uvicorn has no HTTP/2; daphne's needs TLS with ALPN and closes an h2c connection at once.
H2C_SERVERS = (
    Server("hypercorn-asyncio-h2c", HYPERCORN_ASYNCIO.argv),
    Server("hypercorn-trio-h2c", HYPERCORN_TRIO.argv, HYPERCORN_TRIO.needs),
    Server("granian-h2c", GRANIAN.argv, GRANIAN.needs),
)

#: The websocket configurations, each with the shortest ping interval and timeout its command
#: line takes (uvicorn, daphne), so a client gone silent is noticed within about a second.
#: hypercorn has a ping interval but no timeout; granian has neither for websockets.
_UVICORN_PINGS = "--ws-ping-interval 0.5 --ws-ping-timeout 0.5"
UVICORN_WEBSOCKETS = Server(
    "uvicorn-websockets",
    f"{_UVICORN} --http httptools --loop uvloop --ws websockets {_UVICORN_PINGS}",
    ("httptools", "uvloop", "websockets"),
)
UVICORN_WSPROTO = Server(
    "uvicorn-wsproto",
    f"{_UVICORN} --http h11 --loop asyncio --ws wsproto {_UVICORN_PINGS}",
    ("h11", "wsproto"),
)
UVICORN_WEBSOCKETS_SANSIO = Server(
    "uvicorn-websockets-sansio",
    f"{_UVICORN} --http httptools --loop uvloop --ws websockets-sansio {_UVICORN_PINGS}",
    ("httptools", "uvloop", "websockets"),
)
_HYPERCORN_PINGS = "--websocket-ping-interval 1"  # whole seconds only
WEBSOCKET_SERVERS = (
    UVICORN_WEBSOCKETS,
    UVICORN_WSPROTO,
    Server("hypercorn-asyncio-ws", f"{_HYPERCORN} -k asyncio {_HYPERCORN_PINGS}"),
    Server("hypercorn-trio-ws", f"{_HYPERCORN} -k trio {_HYPERCORN_PINGS}", ("trio",)),
    Server("granian-ws", _GRANIAN, ("granian",)),
    Server(
        "daphne-ws",
        "{bin}/daphne -b {host} -p {port} --ping-interval 1 --ping-timeout 1 {app}",
        ("daphne",),
    ),
    UVICORN_WEBSOCKETS_SANSIO,
)

#: Every server above by name.
ALL_SERVERS = {server.name: server for server in (*SERVERS, *H2C_SERVERS)}


class RunningServer:
    """A started server: its port, its process, and everything it wrote to stdout and stderr."""

    def __init__(self, server: Server, child: Child, port: int, log: Path):
        self.server = server
        self.port = port
        self.log_path = log
        self._child = child

    def __repr__(self) -> str:
        return f"<RunningServer {self.server.name} pid={self.pid} port={self.port}>"

    @property
    def pid(self) -> int:
        """The server's main process, also the id of its process group."""
        return self._child.pid

    def alive(self) -> bool:
        """Whether the main process is still running."""
        return self._child.alive()

    def log(self) -> str:
        """Everything the server (and the app in it) wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop the whole process group (see :meth:`Child.stop`)."""
        self._child.stop()


class ServerView:
    """One test's view of a server that may have served earlier tests.

    The server's output is read from where it stood when the test began, so a test sees
    only what its own requests caused.
    """

    def __init__(self, running: RunningServer, events: EventLog) -> None:
        self.running = running
        self.server = running.server
        self.port = running.port
        self.pid = running.pid
        self.events = events
        self._offset = running.log_path.stat().st_size

    def __repr__(self) -> str:
        return f"<ServerView of {self.running!r} from byte {self._offset}>"

    def alive(self) -> bool:
        """Whether the server's main process is still running."""
        return self.running.alive()

    def log(self) -> str:
        """What the server wrote to stdout and stderr since this test began."""
        with self.running.log_path.open("rb") as file:
            file.seek(self._offset)
            return file.read().decode(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """The server's main process and all of its descendants (workers)."""
        main = psutil.Process(self.pid)
        return [main, *main.children(recursive=True)]


class ServerPool:
    """Keeps one server running and hands it to consecutive tests that ask for the same one.

    Starting a server costs one to two seconds, most of the real-server suite's time. The
    tests are ordered by server (see ``conftest.py``), so each server starts about once
    per test module. A server that died (a test may kill it) is replaced by a fresh one.

    Every server gets an events file of its own (``$FASTAPI_HANGUP_E2E_EVENTS``) and the
    pool's folder for large files (``$FASTAPI_HANGUP_E2E_FILES``), removed on :meth:`close`.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._files = folder / "files"
        self._files.mkdir()
        self._stack = contextlib.ExitStack()
        self._key: tuple[Server, str] | None = None
        self._running: RunningServer | None = None
        self._events: EventLog | None = None
        self._started = 0

    def view(self, server: Server, app: str, ready_path: str = "/ready") -> ServerView:
        """A view of a running ``server`` serving ``app``, started (or restarted) if needed."""
        if self._key != (server, app) or self._running is None or not self._running.alive():
            self._start(server, app, ready_path)
        assert self._running is not None
        assert self._events is not None
        return ServerView(self._running, self._events)

    def close(self) -> None:
        """Stop the running server, if any, and remove the large files."""
        self._stop()
        shutil.rmtree(self._files, ignore_errors=True)  # not left for pytest's keep-3

    def _stop(self) -> None:
        self._key = self._running = self._events = None
        self._stack.close()

    def _start(self, server: Server, app: str, ready_path: str) -> None:
        self._stop()
        self._started += 1
        folder = self._folder / f"{self._started:03d}-{server.name}"
        folder.mkdir()
        events = EventLog(folder / "events.jsonl")
        self._running = self._stack.enter_context(
            run_server(
                server,
                app,
                folder / "server.log",
                env={EVENTS_ENV: str(events.path), FILES_ENV: str(self._files)},
                ready_path=ready_path,
            )
        )
        self._key, self._events = (server, app), events


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
    with run_command(
        server,
        server.command(app, port),
        port,
        log,
        env=env,
        ready_path=ready_path,
        start_timeout=start_timeout,
    ) as running:
        yield running


@contextlib.contextmanager
def run_command(
    server: Server,
    argv: list[str],
    port: int,
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/",
    start_timeout: float = 20.0,
) -> Iterator[RunningServer]:
    """Run ``argv`` (which listens on ``port``) while the block runs; see :func:`run_server`.

    For a process that :attr:`Server.argv` cannot describe, such as nginx with its
    generated configuration.
    """
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    with log.open("wb") as output:
        child = spawn(argv, cwd=ROOT, env=environment, output=output)
    running = RunningServer(server, child, port, log)
    try:
        _wait_ready(running, ready_path, start_timeout)
        yield running
    finally:
        running.stop()


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
