"""How long a hang-up takes to reach a guarded endpoint, over real sockets against uvicorn.

The server (this module's ``server``, run by uvicorn in a subprocess) holds each request in a
guarded endpoint's ``await anyio.sleep(60)`` and reads ``time.monotonic()`` in its ``finally``
block. The client opens raw sockets, sends one request on each, waits until the server has
started them all, then closes every socket as fast as it can, reading ``time.monotonic()`` just
before each ``close()``. CLOCK_MONOTONIC is one clock for every process on Linux, so the
endpoint's time minus its client's close time is the latency of that hang-up.

Two references run the same way, so the figures can be read against what the server and
FastAPI cost by themselves: a FastAPI endpoint that awaits ``http.disconnect`` from
``request.receive()`` itself (nothing is cancelled), and a bare ASGI app doing the same.

Prints p50/p90/p99/max for one hang-up at a time (``--baseline-runs`` of them, which also warm
the server up), then for ``--in-flight`` requests hung up at once, per round (variants take
turns in each round, so drift of the machine hits them alike), then all rounds pooled. It
measures; it asserts nothing about timing.

    uv run python benchmarks/latency.py [-n 200] [--rounds 5] [--http h11] [--loop asyncio]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import anyio
from fastapi import FastAPI, Request
from starlette.types import Receive, Scope, Send

from fastapi_hangup import CancelCtx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.overhead import free_port, pinned  # noqa: E402

# -- the server side --------------------------------------------------------------------------

started: set[int] = set()
stopped_at: dict[int, float] = {}  # request id -> time.monotonic() when the hang-up reached it
app = FastAPI()


@app.get("/guarded/{rid}")
async def guarded(rid: int, ctx: CancelCtx) -> None:
    started.add(rid)
    try:
        await anyio.sleep(60)
    finally:
        if ctx.is_cancelled:
            stopped_at[rid] = time.monotonic()


@app.get("/by-hand/{rid}")
async def by_hand(rid: int, request: Request) -> None:
    """Reference: no cancellation; the endpoint waits for the disconnect itself."""
    started.add(rid)
    for _ in range(3):  # a GET has one (empty) body message, then the disconnect
        if (await request.receive())["type"] == "http.disconnect":
            stopped_at[rid] = time.monotonic()
            return


@app.get("/stats")
async def stats(first: int, last: int) -> dict[str, Any]:
    """How many of requests ``first..last`` have started, and when the hang-up reached each."""
    ids = range(first, last + 1)
    return {
        "started": sum(rid in started for rid in ids),
        "stopped_at": {rid: stopped_at[rid] for rid in ids if rid in stopped_at},
    }


async def server(scope: Scope, receive: Receive, send: Send) -> None:
    """What uvicorn runs: a bare ASGI app under ``/bare/`` (reference), FastAPI elsewhere."""
    if scope["type"] == "http" and scope["path"].startswith("/bare/"):
        rid = int(scope["path"].removeprefix("/bare/"))
        started.add(rid)
        for _ in range(3):
            if (await receive())["type"] == "http.disconnect":
                stopped_at[rid] = time.monotonic()
                return
        return
    await app(scope, receive, send)


VARIANTS = {
    "guarded": ("/guarded", "guarded endpoint (ctx: CancelCtx), work cancelled"),
    "by-hand": ("/by-hand", "reference: FastAPI endpoint awaiting request.receive()"),
    "bare": ("/bare", "reference: bare ASGI app awaiting receive()"),
}

# -- the client side --------------------------------------------------------------------------


@contextmanager
def serve(http: str, loop: str, log: Path) -> Iterator[tuple[int, int]]:
    """Run uvicorn with ``server``, pinned to CPU 0, its output going to ``log``; yield its port
    and its process id."""
    port = free_port()
    cmd = [
        *pinned(0),
        *(sys.executable, "-m", "uvicorn", "benchmarks.latency:server"),
        *("--host", "127.0.0.1", "--port", str(port), "--http", http, "--loop", loop),
        *("--log-level", "warning", "--no-access-log", "--backlog", "4096"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        if not poll(lambda: is_up(port) or proc.poll() is not None, timeout=15, interval=0.05):
            raise SystemExit(f"uvicorn did not start within 15 s:\n{log.read_text()}")
        if proc.poll() is not None:
            raise SystemExit(f"uvicorn exited:\n{log.read_text()}")
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def is_up(port: int) -> bool:
    try:
        get_stats(port, 0, 0)
    except OSError:
        return False
    return True


def get_stats(port: int, first: int, last: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/stats?first={first}&last={last}"
    with urllib.request.urlopen(url, timeout=5) as response:
        result: dict[str, Any] = json.load(response)
        return result


def poll(done: Callable[[], bool], *, timeout: float, interval: float = 0.01) -> bool:
    """Call ``done`` until it returns true or ``timeout`` seconds pass; return its last answer."""
    deadline = time.monotonic() + timeout
    while not (result := done()) and time.monotonic() < deadline:
        time.sleep(interval)
    return result


class Burst(NamedTuple):
    latencies: list[float]  # ms from each client's close() to its endpoint's stop
    closing_ms: float  # from the client's first close() to its last
    stopping_ms: float  # from the first endpoint's stop to the last, on the server
    cpu_ms: float  # the server's CPU time from the first close() until all had stopped


def cpu_ms(pid: int) -> float:
    """CPU time a process has used, in ms (Linux's schedstat: nanoseconds, not ticks)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e6
    except OSError:
        return float("nan")


def hang_up_at_once(
    port: int, pid: int, path: str, first: int, count: int, gap: float = 0.0
) -> Burst:
    """Hold ``count`` requests in flight, then close all their sockets.

    With ``gap`` 0 as fast as possible (a burst: the server handles the hang-ups one after
    another, so the last waits for all the others); otherwise one every ``gap`` seconds,
    each while the rest are still in flight.
    """
    last = first + count - 1
    sockets: dict[int, socket.socket] = {}
    closed_at: dict[int, float] = {}
    try:
        for rid in range(first, last + 1):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sockets[rid] = sock
            sock.sendall(f"GET {path}/{rid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        poll(lambda: get_stats(port, first, last)["started"] == count, timeout=30)
        cpu_before = cpu_ms(pid)
        for rid, sock in sockets.items():
            closed_at[rid] = time.monotonic()
            sock.close()
            if gap:
                time.sleep(gap)
    finally:
        for sock in sockets.values():
            sock.close()  # a no-op for the ones closed above
    time.sleep(0.02)  # let the server work before the first poll competes with it
    poll(lambda: len(get_stats(port, first, last)["stopped_at"]) == count, timeout=10)
    cpu = cpu_ms(pid) - cpu_before  # the polls above cost the server a little too
    reached: dict[str, float] = get_stats(port, first, last)["stopped_at"]
    return Burst(
        latencies=[(at - closed_at[int(rid)]) * 1000 for rid, at in reached.items()],
        closing_ms=_span_ms(closed_at.values()),
        stopping_ms=_span_ms(reached.values()),
        cpu_ms=cpu,
    )


def _span_ms(times: Iterable[float]) -> float:
    times = list(times)
    return (max(times) - min(times)) * 1000 if times else 0.0


def row(label: str, latencies: list[float], expected: int, note: str = "") -> str:
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        figures = [cuts[49], cuts[89], cuts[98], max(latencies)]
    else:
        figures = latencies * 4 or [float("nan")] * 4
    shown = "".join(f"{f:>8.2f}" for f in figures)
    return f"  {label:<28}{len(latencies):>6}/{expected:<6}{shown}   {note}".rstrip()


def raise_fd_limit(needed: int) -> None:
    """Allow ``needed`` open files (the client's sockets; the server inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"need {needed} open files, the hard limit is {hard}: use a smaller -n")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def measure(port: int, pid: int, args: argparse.Namespace) -> dict[str, list[str]]:
    """Run every scenario; return the printed rows of each variant."""
    rows: dict[str, list[str]] = {v: [] for v in args.variants}
    pooled: dict[str, list[float]] = {v: [] for v in args.variants}
    next_id = 1
    for variant in args.variants:
        single: list[float] = []
        for _ in range(args.baseline_runs):
            single += hang_up_at_once(port, pid, VARIANTS[variant][0], next_id, 1).latencies
            next_id += 1
        rows[variant].append(row("1 in flight, one at a time", single, args.baseline_runs))
    for round_ in range(args.rounds):
        for variant in args.variants:
            burst = hang_up_at_once(port, pid, VARIANTS[variant][0], next_id, args.in_flight)
            next_id += args.in_flight
            pooled[variant] += burst.latencies
            label = f"{args.in_flight} in flight, round {round_ + 1}"
            note = f"{burst.closing_ms:7.2f}{burst.stopping_ms:9.2f}{burst.cpu_ms:8.1f}"
            rows[variant].append(row(label, burst.latencies, args.in_flight, note))
    for variant in args.variants:
        label = f"{args.in_flight} in flight, all rounds"
        rows[variant].append(row(label, pooled[variant], args.in_flight * args.rounds))
    for variant in args.variants:
        burst = hang_up_at_once(
            port, pid, VARIANTS[variant][0], next_id, args.in_flight, args.gap_ms / 1000
        )
        next_id += args.in_flight
        label = f"{args.in_flight} in flight, 1 by 1"
        note = f"{burst.closing_ms:7.2f}{burst.stopping_ms:9.2f}"
        rows[variant].append(row(label, burst.latencies, args.in_flight, note))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--in-flight", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-runs", type=int, default=20)
    parser.add_argument(
        "--gap-ms", type=float, default=5.0, help="gap between closes in the 1-by-1 scenario"
    )
    parser.add_argument("--http", choices=["auto", "httptools", "h11"], default="auto")
    parser.add_argument("--loop", choices=["auto", "asyncio", "uvloop"], default="auto")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    raise_fd_limit(args.in_flight + 256)
    if pinned(1) and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})  # the client on CPU 1, the server on CPU 0
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with serve(args.http, args.loop, log) as (port, pid):
            rows = measure(port, pid, args)
        server_log = log.read_text().strip()
    print(f"uvicorn --http {args.http} --loop {args.loop}: ms from a client's close() to the")
    print("moment the hang-up reached its endpoint (CLOCK_MONOTONIC, shared by processes)\n")
    figures = "".join(f"{name:>8}" for name in ("p50", "p90", "p99", "max"))
    print(f"  {'':<28}{'stopped':>12}{figures}   {'closing':>7}{'stopping':>9}{'cpu':>8}")
    for variant, lines in rows.items():
        print(VARIANTS[variant][1])
        print("\n".join(lines))
    print(
        "\nclosing: ms from the client's first close() to its last; stopping: ms from the first"
        "\nendpoint reached to the last, on the server (over N, the server's cost per hang-up);"
        "\ncpu: ms of the server's CPU time from the first close() until all had stopped."
        "\nproject target for the guarded endpoint: p50 <= 1 ms, p99 <= 5 ms with 200 in flight"
    )
    if server_log:
        print(f"\nthe server logged:\n{server_log}")


if __name__ == "__main__":
    main()
