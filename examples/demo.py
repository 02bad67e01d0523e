"""See fastapi-hangup stop abandoned work: a real uvicorn server, real sockets, real hang-ups.

    uv run examples/demo.py

Serves ``examples/demo_app.py`` with uvicorn on a free loopback port, sends requests to its
guarded and unguarded endpoints, hangs up on them, and prints what the server did about it.
Exits 1 if the guarded endpoint's work did not stop.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS = ("/guarded", "/unguarded")
CLIENTS = 5  # per endpoint, all at once
HANG_UP_AFTER = 0.35  # seconds into the work: between two 100 ms steps, so runs agree

EXPLANATION = (
    "Two endpoints of one FastAPI app (examples/demo_app.py), served by uvicorn, do the same "
    "work: 20 steps of 100 ms, standing in for an LLM streaming tokens or a SQL query paging "
    "through rows. /guarded declares `ctx: CancelCtx`, /unguarded does not. "
    f"{CLIENTS} clients per endpoint send a request and hang up (close their socket) "
    f"{HANG_UP_AFTER * 1000:.0f} ms into the work. The unguarded endpoint goes on working for "
    "nobody; the guarded one gets a cancellation at its next await, its finally blocks run, "
    "and the request ends quietly, with one log line instead of a traceback."
)


@dataclass
class Client:
    """One client that hung up: which endpoint it called, and when it closed its socket."""

    endpoint: str
    port: int  # the client's local port, which is how the server's jobs name their client
    hung_up_at: float  # time.monotonic(), the same clock the server reads on Linux


@dataclass
class Row:
    endpoint: str
    stopped: str
    latency: str
    work: str
    saved: str


def main() -> int:
    print(textwrap.fill(EXPLANATION, width=88), end="\n\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with serve(log) as port:
            clients = hang_up(port)
            steps, jobs = wait_for_work(port, expected=len(clients))
        server_log = log.read_text().strip()
    rows = [summarize(endpoint, clients, jobs, steps) for endpoint in ENDPOINTS]
    print_table(rows)
    print("\nServer log:")
    print(textwrap.indent(server_log or "(empty)", "  "))
    return verdict(rows, server_log)


@contextmanager
def serve(log: Path) -> Iterator[int]:
    """Run uvicorn with the demo app in a subprocess, output to ``log``; yield its port."""
    port = free_port()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "examples.demo_app:app"),
                *("--host", "127.0.0.1", "--port", str(port)),
                *("--log-level", "warning", "--no-access-log"),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(port, server, log)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_stats(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2) as response:
        stats: dict[str, Any] = json.load(response)
        return stats


def wait_until_up(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while not is_up(port):
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"uvicorn did not start on 127.0.0.1:{port}:\n{log.read_text()}")
        time.sleep(0.05)


def is_up(port: int) -> bool:
    try:
        get_stats(port)
    except OSError:
        return False
    return True


def hang_up(port: int) -> list[Client]:
    """Send every request, let the work run a while, then close every socket unread."""
    sockets: list[tuple[str, socket.socket]] = []
    try:
        for endpoint in ENDPOINTS:
            for _ in range(CLIENTS):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                sockets.append((endpoint, sock))
                sock.sendall(f"GET {endpoint} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        started_at = wait_for_start(port, len(sockets))
        time.sleep(max(0.0, started_at + HANG_UP_AFTER - time.monotonic()))
        clients = []
        for endpoint, sock in sockets:
            local_port = int(sock.getsockname()[1])
            hung_up_at = time.monotonic()
            sock.close()
            clients.append(Client(endpoint, local_port, hung_up_at))
        return clients
    finally:
        for _, sock in sockets:
            sock.close()  # a no-op for the ones closed above


def wait_for_start(port: int, expected: int) -> float:
    """Poll ``/stats`` until every request's work has started (at most 5 s); return when.

    The server is the one to ask: a fresh server starts its first requests up to ~0.1 s late.
    """
    for _ in range(250):
        started = [job["started_at"] for job in get_stats(port)["jobs"]]
        if len(started) >= expected:
            break
        time.sleep(0.02)
    return max(started, default=time.monotonic())


def wait_for_work(port: int, expected: int) -> tuple[int, list[dict[str, Any]]]:
    """Poll ``/stats`` until every request's work has finished or stopped (at most 6 s)."""
    for _ in range(120):
        time.sleep(0.05)  # before the first poll too, so it does not compete with the hang-ups
        stats = get_stats(port)
        ended = [job for job in stats["jobs"] if job["ended_at"] is not None]
        if len(ended) >= expected:
            break
    return int(stats["steps"]), ended


def summarize(endpoint: str, clients: list[Client], jobs: list[dict[str, Any]], steps: int) -> Row:
    hung_up_at = {c.port: c.hung_up_at for c in clients if c.endpoint == endpoint}
    mine = [job for job in jobs if job["client_port"] in hung_up_at]
    stopped = [job for job in mine if job["units_done"] < steps]
    latencies = [(job["ended_at"] - hung_up_at[job["client_port"]]) * 1000 for job in stopped]
    done, total = sum(job["units_done"] for job in mine), steps * len(hung_up_at)
    answer = "yes" if stopped and len(stopped) == len(hung_up_at) else "no"
    return Row(
        endpoint=endpoint,
        stopped=f"{answer:<4}{len(stopped)}/{len(hung_up_at)}",  # "yes 5/5"
        latency=f"{statistics.median(latencies):.1f} ms" if latencies else "—",
        work=f"{done} / {total}",
        saved=f"{1 - done / total:.0%}" if total else "—",
    )


def print_table(rows: list[Row]) -> None:
    header = Row("endpoint", "work stopped", "hang-up → stop", "units of work done", "saved")
    for row in (header, *rows):
        print(f"{row.endpoint:<12}{row.stopped:<14}{row.latency:>14}{row.work:>21}{row.saved:>8}")
    print(
        "\nhang-up → stop: median time from the client's close() to the end of the work\n"
        "(its finally block), both read from CLOCK_MONOTONIC, which all processes share."
    )


def verdict(rows: list[Row], server_log: str) -> int:
    guarded = next(row for row in rows if row.endpoint == "/guarded")
    if not guarded.stopped.startswith("yes"):
        count = guarded.stopped.split()[-1]
        print(
            f"\nFAILED: the guarded endpoint's work did not stop after the hang-up ({count} "
            "requests stopped). fastapi-hangup is not cancelling on this setup.",
            file=sys.stderr,
        )
        return 1
    if "Traceback" in server_log or "Exception in ASGI application" in server_log:
        print("\nFAILED: the server logged an error (see the server log above).", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
