"""Per-request cost of each variant in microseconds, in process: no server, no network.

Each request is one ASGI call on a fresh task (as servers run them), on uvloop, with a body
already there; the cost printed is the best and the median round's mean time per request,
and the extra cost over ``plain``. Far steadier than a wrk run on a shared machine, so it
tells small before/after differences apart.

    uv run python benchmarks/inprocess.py [--requests 5000] [--rounds 7] [--tree NAME=PATH]

``--tree NAME=PATH`` measures another checkout's variants too, in its own processes,
alternating with this one's, so both see the same machine. ``--python`` runs the measuring
processes with another interpreter: the one of the peers' environment ``scripts/bench`` makes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def asgi_request() -> tuple[dict[str, Any], Any, Any]:
    """One ``GET /`` as servers hand it to the app: the scope, a ``receive`` that waits for
    ever (the body is already there), and a ``send`` that drops every message."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},  # uvicorn's copy of the lifespan state: its scope has these 13 keys
    }
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if never.is_set():
            raise AssertionError
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    return scope, receive, send


async def _measure(variants: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    from benchmarks._apps import build, names

    apps = {v: build(v) for v in variants if v in names()}
    scope, receive, send = asgi_request()
    loop = asyncio.get_running_loop()

    async def one_round(app: Any) -> float:
        start = time.perf_counter()
        for _ in range(requests):
            await loop.create_task(app(dict(scope), receive, send))
        return (time.perf_counter() - start) / requests * 1e6

    for app in apps.values():  # warm-up
        await one_round(app)
    results: dict[str, list[float]] = {v: [] for v in apps}
    for _ in range(rounds):
        for variant, app in apps.items():
            results[variant].append(await one_round(app))
    return results


def _child(variants: list[str], requests: int, rounds: int) -> None:
    import uvloop

    results = uvloop.run(_measure(variants, requests, rounds))
    print(json.dumps(results))


def _names_in(python: str) -> list[str]:
    """The variants an interpreter can build (a peer's only where its package is installed)."""
    from benchmarks._apps import names

    if python == sys.executable:
        return names()
    out = subprocess.run(
        [
            python,
            "-c",
            "import json; from benchmarks._apps import names; print(json.dumps(names()))",
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return list(json.loads(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=2, help="processes per tree")
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter to measure in (the peers' env)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = args.variants or _names_in(args.python)
    if args.child:
        _child(variants, args.requests, args.rounds)
        return
    from benchmarks._child import run_child

    trees = [("", ROOT)] + [
        (name, Path(path)) for name, _, path in (t.partition("=") for t in args.tree)
    ]
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name, root in trees:
            out = run_child(
                __file__,
                [
                    *("--requests", str(args.requests), "--rounds", str(args.rounds)),
                    *("--variants", *variants),
                ],
                python=args.python,
                root=root,
            )
            for variant, samples in json.loads(out).items():
                label = f"{variant}@{name}" if name else variant
                runs.setdefault(label, []).extend(samples)
    # The fastest round is the steadiest estimate of a cost on a shared machine: noise only
    # ever adds time. The median is shown next to it.
    base, base_median = min(runs["plain"]), statistics.median(runs["plain"])
    print(f"{'variant':<30}{'best µs':>10}{'over plain':>12}{'median µs':>12}{'over plain':>12}")
    for label, samples in runs.items():
        best, med = min(samples), statistics.median(samples)
        over, over_median = best - base, med - base_median
        print(f"{label:<30}{best:>10.1f}{over:>+12.1f}{med:>12.1f}{over_median:>+12.1f}")


if __name__ == "__main__":
    if "--child" not in sys.argv:  # a child imports the tree its PYTHONPATH names
        sys.path.insert(0, str(ROOT))
    main()
