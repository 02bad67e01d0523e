"""How fast a hang-up at the edge stops three services deep, and how much work that saves.

Starts nginx → A → B → C on loopback (``tests/e2e/_cascade.py``: each service a uvicorn
serving ``tests/e2e/cascade_app.py``, httpx with ``forward_deadline`` between them). Each run
sends ``GET /chain`` to nginx on a raw socket, waits until C has started, lets the chain work
for ``--settle`` seconds, then closes the socket, reading ``time.monotonic()`` just before.
Each service records when its work ended (CLOCK_MONOTONIC is one clock for every process on
Linux), so *edge close → stop* is that time minus the close time, per service and for the
last of them.

Then the same chain without fastapi-hangup (``CASCADE_GUARDED=0``) does the same runs: its
work goes on after the client left. For both, the work B and C did after the close is
counted in units (one unit: 10 ms of the service's work, ~0.2 ms of it CPU) and in
CPU-seconds of B's and C's processes (psutil), from the close until their work ended.
It measures; it asserts nothing.

    uv run python benchmarks/cascade.py [--runs 40] [--reference-runs 5] [--work 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.e2e._cascade import SERVICES, Cascade, run_cascade  # noqa: E402
from tests.e2e._client import Connection  # noqa: E402
from tests.e2e._events import new_request_id  # noqa: E402

MAX_RUNS = 200
DOWNSTREAM = ("B", "C")


@dataclass
class Run:
    """One hang-up: when each service stopped after the close, and what B and C did after it."""

    stopped_after: dict[str, float]
    units_after: int
    cpu_after: float


def cpu_seconds(cascade: Cascade, names: tuple[str, ...]) -> float:
    total = 0.0
    for name in names:
        times = psutil.Process(cascade.services[name].pid).cpu_times()
        total += times.user + times.system
    return total


def one_run(cascade: Cascade, work: float, settle: float, timeout: float) -> Run:
    rid = new_request_id()
    with Connection(cascade.port, timeout=10.0) as connection:
        target = f"/chain?rid={rid}&seconds={work}"
        connection.send_request("GET", target, headers={"x-request-id": rid})
        cascade.wait_for(rid, "C", "start")
        time.sleep(settle)
        cpu_before = cpu_seconds(cascade, DOWNSTREAM)
        closed_at = connection.hang_up()
    ends = {name: cascade.wait_for(rid, name, "end", timeout=timeout) for name in SERVICES}
    cpu_after = cpu_seconds(cascade, DOWNSTREAM) - cpu_before
    units = sum(1 for name in DOWNSTREAM for t in ends[name]["ticks"] if t > closed_at)
    stopped = {name: ends[name]["t"] - closed_at for name in SERVICES}
    return Run(stopped, units, cpu_after)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(guarded: bool, runs: int, work: float, settle: float) -> list[Run]:
    with (
        tempfile.TemporaryDirectory(prefix="cascade-bench-") as folder,
        run_cascade(Path(folder), guarded=guarded) as cascade,
    ):
        timeout = work + 10.0
        one_run(cascade, work, settle, timeout)  # warm-up: connections, imports
        return [one_run(cascade, work, settle, timeout) for _ in range(runs)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(guarded: list[Run], reference: list[Run], work: float) -> None:
    print(f"\nEdge close → work stopped, fastapi-hangup in every service ({len(guarded)} runs):\n")
    print("| service | p50 (ms) | p99 (ms) | max (ms) |")
    print("| --- | ---: | ---: | ---: |")
    rows = [*SERVICES, "last of the three"]
    for row in rows:
        if row in SERVICES:
            values = [r.stopped_after[row] for r in guarded]
        else:
            values = [max(r.stopped_after.values()) for r in guarded]
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"| {row} | {ms(p50)} | {ms(p99)} | {ms(max(values))} |")

    print(f"\nWork B and C did after the client left ({work:g} s jobs, mean per hang-up):\n")
    print("| chain | runs | last stop (ms, p50) | work units | CPU-seconds |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, runs in (("fastapi-hangup", guarded), ("unguarded", reference)):
        last = percentile([max(r.stopped_after.values()) for r in runs], 0.5)
        units = statistics.mean(r.units_after for r in runs)
        cpu = statistics.mean(r.cpu_after for r in runs)
        print(f"| {label} | {len(runs)} | {ms(last)} | {units:.1f} | {cpu:.3f} |")
    saved = 1 - statistics.mean(r.units_after for r in guarded) / max(
        1e-9, statistics.mean(r.units_after for r in reference)
    )
    print(f"\nDownstream work saved: {saved:.1%} of the units the unguarded chain did.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40, help="hang-ups on the guarded chain")
    parser.add_argument("--reference-runs", type=int, default=5, help="on the unguarded one")
    parser.add_argument("--work", type=float, default=2.0, help="seconds of work per service")
    parser.add_argument("--settle", type=float, default=0.1, help="work before the hang-up (s)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, MAX_RUNS))
    reference_runs = max(1, min(args.reference_runs, MAX_RUNS))
    guarded = measure(True, runs, args.work, args.settle)
    reference = measure(False, reference_runs, args.work, args.settle)
    report(guarded, reference, args.work)


if __name__ == "__main__":
    main()
