"""Real PostgreSQL and Redis servers on loopback for the tests, gone when the run ends.

Each runs in a folder of its own (data, socket, log), on a free port, started through
``_spawn.spawn`` like every server of the suite: its process group dies with the test run,
however the run ends. PostgreSQL refuses to run as root; as root (CI), it runs as the
``postgres`` user that Debian's package creates. ``.ci/run`` installs both packages.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests._helpers import free_port

from ._servers import ROOT
from ._spawn import Child, spawn

HOST = "127.0.0.1"


def _postgres_bin(name: str) -> str | None:
    # Debian keeps initdb and postgres out of PATH, under its versioned folder.
    found = shutil.which(name)
    if found is not None and name != "initdb":
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else found


def missing_services() -> list[str]:
    """What is not installed of PostgreSQL and Redis (empty: both can run)."""
    missing = [name for name in ("initdb", "postgres") if _postgres_bin(name) is None]
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    return missing


@dataclass
class Service:
    """A running service: where it listens, its log, and its process."""

    name: str
    port: int
    log: Path
    child: Child

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _wait_listening(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not service.child.alive():
            raise RuntimeError(f"{service.name} exited while starting:\n{service.log_text()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, service.port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{service.name} did not listen within {timeout} s:\n{service.log_text()}")


def _as_postgres_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]


@contextlib.contextmanager
def postgres() -> Iterator[tuple[Service, str]]:
    """Run a throw-away PostgreSQL cluster; yield it and its DSN (user ``postgres``, trust).

    Its folder is a temporary one of its own: pytest's are private to the user running the
    tests, and as root the cluster runs as ``postgres``.
    """
    initdb, server = _postgres_bin("initdb"), _postgres_bin("postgres")
    assert initdb is not None, missing_services()
    assert server is not None, missing_services()
    with tempfile.TemporaryDirectory(prefix="fastapi-hangup-pg-") as name:
        folder = Path(name)
        folder.chmod(0o755)
        with _postgres(folder, initdb, server) as running:
            yield running


@contextlib.contextmanager
def _postgres(folder: Path, initdb: str, server: str) -> Iterator[tuple[Service, str]]:
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    prefix = _as_postgres_user()
    made = subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    if made.returncode:
        raise RuntimeError(f"initdb failed:\n{made.stdout}{made.stderr}")
    port = free_port()
    log = folder / "postgres.log"
    argv = [
        *prefix,
        server,
        "-D",
        str(data),
        "-h",
        HOST,
        "-p",
        str(port),
        "-k",
        str(sockets),
        "-c",
        "fsync=off",
        "-c",
        "max_connections=60",
        "-c",
        "log_min_messages=warning",
    ]
    with log.open("wb") as output:
        child = spawn(argv, cwd=ROOT, env={**os.environ, "LC_ALL": "C"}, output=output)
    service = Service("postgres", port, log, child)
    try:
        _wait_listening(service, 20.0)
        dsn = f"postgresql://postgres@{HOST}:{port}/postgres"
        _wait_accepting(dsn, service, 20.0)
        yield service, dsn
    finally:
        child.stop(grace=10.0)


def _wait_accepting(dsn: str, service: Service, timeout: float) -> None:
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            return
        except psycopg.OperationalError:  # "the database system is starting up"
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres never accepted:\n{service.log_text()}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def redis(folder: Path) -> Iterator[tuple[Service, str]]:
    """Run a throw-away Redis server without persistence; yield it and its URL."""
    server = shutil.which("redis-server")
    assert server is not None, missing_services()
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = folder / "redis.log"
    argv = [
        server,
        "--bind",
        HOST,
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
    ]
    with log.open("wb") as output:
        child = spawn(argv, cwd=ROOT, env=dict(os.environ), output=output)
    service = Service("redis", port, log, child)
    try:
        _wait_listening(service, 20.0)
        yield service, f"redis://{HOST}:{port}/0"
    finally:
        child.stop()


def sql(dsn: str, query: str, *args: object) -> Any:
    """The first column of the first row of ``query``, from a connection of the test's own."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as connection:
        row = connection.execute(query, args).fetchone()
    assert row is not None
    return row[0]
