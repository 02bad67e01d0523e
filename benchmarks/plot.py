"""Draw ``docs/benchmarks.png`` from the figures ``overhead.py --json`` wrote.

For every variant, two bars: its throughput as a share of the plain route's, for the route
that returns at once and for the one that awaits once (the median of the interleaved
rounds). Our three entry points are drawn in one colour, the peers and recipes in another.

    uv run python benchmarks/plot.py RESULTS.json [--out docs/benchmarks.png]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("cancel_ctx", "@cancellable", "CancellableRoute", "add_cancellation")
AWAITS = "+await"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.png")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, list[float]] = json.loads(args.results.read_text())
    median = {variant: statistics.median(samples) for variant, samples in runs.items()}
    bases = [v for v in median if not v.endswith(AWAITS) and v != "plain"]
    at_once = [median[v] / median["plain"] for v in bases]
    awaiting = [median.get(v + AWAITS, 0.0) / median.get("plain" + AWAITS, 1.0) for v in bases]

    fig, ax = plt.subplots(figsize=(9, 0.45 * len(bases) + 1.5))
    rows = range(len(bases))
    ours = ["tab:blue" if v in OURS else "tab:gray" for v in bases]
    ax.barh([r - 0.2 for r in rows], at_once, height=0.4, color=ours, alpha=0.55)
    ax.barh([r + 0.2 for r in rows], awaiting, height=0.4, color=ours)
    for r, (once, awaited) in enumerate(zip(at_once, awaiting, strict=True)):
        ax.text(once + 0.01, r - 0.2, f"{once:.0%}", va="center", fontsize=8)
        ax.text(awaited + 0.01, r + 0.2, f"{awaited:.0%}", va="center", fontsize=8)
    ax.set_yticks(list(rows), bases)
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlim(0, 1.15)
    ax.set_xlabel(
        "throughput as a share of a plain route (light: returns at once; dark: awaits once)"
    )
    ax.set_title("Throughput against uvicorn, median of interleaved wrk rounds", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
