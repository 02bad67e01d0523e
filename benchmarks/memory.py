"""Memory per in-flight request of each variant, over a plain route, measured in process.

For each variant, ``--requests`` requests are started at once, as servers run them (a task
each), on uvloop, and held in the endpoint's work (it waits for an event) until every one is
in flight and its watcher, if it has one, is running. The memory Python has allocated then
(``tracemalloc``), less what it had before, over the number of requests, is the cost of one
in-flight request; the figure printed is that less ``plain``'s. Then all are released, and
the next variant follows, in ``--rounds`` interleaved rounds (the median is shown).

    uv run python benchmarks/memory.py [--requests 1000] [--rounds 3] [--python PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def _measure(variants: list[str], requests: int, rounds: int) -> dict[str, list[float]]:
    from benchmarks._apps import build
    from benchmarks.inprocess import asgi_request

    release = asyncio.Event()
    working = [0]

    async def held() -> dict[str, bool]:
        working[0] += 1
        await release.wait()
        return {"ok": True}

    apps = {v: build(v, held) for v in variants}
    scope, receive, send = asgi_request()
    loop = asyncio.get_running_loop()
    watchers: dict[Any, float] = {}  # tasks besides the request's own, per request

    async def one_round(app: Any) -> float:
        release.clear()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        working[0] = 0
        tasks = [loop.create_task(app(dict(scope), receive, send)) for _ in range(requests)]
        # Every request in its work, then every watcher armed (1 to 2 ms later). Slept in
        # steps, by the wall clock: under tracemalloc, starting the requests alone can take
        # longer than any one sleep, which would then end before a watcher starts.
        for _ in range(10_000):
            if working[0] == requests:
                break
            await asyncio.sleep(0.001)
        started = time.monotonic()
        for _ in range(100):
            await asyncio.sleep(0.002)
            if time.monotonic() - started > 0.02:
                break
        during = tracemalloc.get_traced_memory()[0]
        watchers[app] = (len(asyncio.all_tasks()) - 1 - requests) / requests
        release.set()
        await asyncio.gather(*tasks)
        return (during - before) / requests / 1024

    tracemalloc.start()
    for app in apps.values():  # warm-up: caches, lazily made classes
        await one_round(app)
    results: dict[str, list[float]] = {v: [] for v in apps}
    for _ in range(rounds):
        for variant, app in apps.items():
            results[variant].append(await one_round(app))
    return {v: [*results[v], watchers[app]] for v, app in apps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure in")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import uvloop

        print(json.dumps(uvloop.run(_measure(args.variants, args.requests, args.rounds))))
        return
    from benchmarks._apps import AWAITS
    from benchmarks._child import run_child
    from benchmarks.inprocess import _names_in

    variants = args.variants or [v for v in _names_in(args.python) if not v.endswith(AWAITS)]
    out = run_child(
        __file__,
        [
            *("--requests", str(args.requests), "--rounds", str(args.rounds)),
            *("--variants", *variants),
        ],
        python=args.python,
    )
    results: dict[str, list[float]] = json.loads(out)  # the rounds, then tasks per request
    base = statistics.median(results["plain"][:-1])
    print(f"{'variant':<32}{'KiB/request':>12}{'over plain':>12}{'tasks':>7}   rounds")
    for variant, (*samples, tasks) in results.items():
        med = statistics.median(samples)
        shown = " ".join(f"{s:.2f}" for s in samples)
        print(f"{variant:<32}{med:>12.2f}{med - base:>+12.2f}{tasks:>7.2f}   {shown}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
