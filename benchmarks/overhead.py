"""Throughput of guarded routes against a plain route, measured with wrk against uvicorn.

Each variant gets its own uvicorn process (one route at ``/``), pinned to CPU 0, while wrk runs
on CPU 1. Variants are measured in interleaved rounds and each reports its median, so drift of
the machine hits every variant alike. Prints req/s and the ratio to ``plain`` from this run.

    uv run python benchmarks/overhead.py [--seconds 5] [--rounds 3]

``--python`` runs the servers with another interpreter: the one of the peers' environment
(``scripts/bench`` makes it), where fastapi-disconnect and aiofence are installed.

``--tree NAME=PATH`` adds the variants of another checkout (``git worktree add PATH v0.1.0``)
to the same interleaved rounds, shown as ``variant@NAME``: a before/after comparison whose
ratios share one baseline and one machine state.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._apps import AWAITS  # noqa: E402
from benchmarks.inprocess import _names_in  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and os.cpu_count() else []


def start_server(
    variant: str, port: int, root: Path = ROOT, python: str = sys.executable
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HANGUP_BENCH_VARIANT": variant, "PYTHONPATH": str(root)}
    cmd = [
        *pinned(0),
        python,
        "-m",
        "uvicorn",
        "benchmarks._apps:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    proc = subprocess.Popen(cmd, env=env, cwd=root)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"uvicorn for {variant} did not start")


def wrk(port: int, seconds: float, connections: int) -> float:
    out = subprocess.run(
        [
            *pinned(1),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            f"http://127.0.0.1:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk run failed:\n{out}")
    return float(match.group(1))


def plain_of(variant: str) -> str:
    """The plain route a variant is measured against: of its own kind (at once, or awaits).

    ``variant`` is a label: a variant's name, ``@NAME`` appended for another tree's. A name
    may start with ``@`` too (``@cancellable+await@v010``), so the kind is read from the
    whole label.
    """
    return "plain" + AWAITS if AWAITS in variant else "plain"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument(
        "--python", default=sys.executable, help="the servers' interpreter (the peers' env)"
    )
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--json", type=Path, help="also write every round's req/s there")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    if os.sep in args.python:  # servers start in each tree's directory: keep it reachable
        args.python = os.path.abspath(args.python)
    args.variants = args.variants or _names_in(args.python)
    runs = [(v, v, ROOT) for v in args.variants]
    for tree in args.tree:
        name, _, path = tree.partition("=")
        source = (Path(path) / "benchmarks" / "_apps.py").read_text()
        # A variant is there if the tree's _apps.py names its route ("x" for "x+await" too).
        here = [
            v
            for v in args.variants
            if not v.startswith("plain") and f'"{v.removesuffix(AWAITS)}"' in source
        ]
        runs += [(f"{v}@{name}", v, Path(path)) for v in here]
    servers = {
        label: (p := free_port(), start_server(v, p, root, args.python)) for label, v, root in runs
    }
    results: dict[str, list[float]] = {label: [] for label in servers}
    try:
        for port, _ in servers.values():  # warm-up: imports, caches, JIT-free but still
            wrk(port, 1, args.connections)
        for _ in range(args.rounds):
            for variant, (port, _) in servers.items():
                results[variant].append(wrk(port, args.seconds, args.connections))
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(10)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(f"{'variant':<36}{'req/s (median)':>16}{'vs plain':>10}   runs")
    for variant, samples in results.items():
        # Each route against the plain route of its own kind (returns at once, or awaits).
        base = statistics.median(results[plain_of(variant)])
        med = statistics.median(samples)
        shown = " ".join(f"{r:.0f}" for r in samples)
        print(f"{variant:<36}{med:>16.0f}{med / base:>10.1%}   {shown}")


if __name__ == "__main__":
    main()
