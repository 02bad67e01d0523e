"""Instructions per request of each variant, counted under valgrind's callgrind, not timed.

The same requests as ``benchmarks/inprocess.py`` (one ASGI call per request on a fresh task, on
uvloop, with a body already there), run under ``valgrind --tool=callgrind``, which counts the
instructions the process executes. The count moves by a few tenths of a per cent from one
run to the next (the arming timer and the event loop's polls still follow the clock), where
timings on a shared machine move by several per cent, so it tells apart differences of a
fraction of a microsecond. It counts instructions, not time: a cache miss costs nothing here.

The measuring process builds every variant and warms it up, then runs ``--requests`` requests
of each in turn, and calls ``binascii.crc_hqx()`` between them: callgrind writes its counters
to a file and zeroes them before each call (``--dump-before``), so each file holds one
variant's requests. Valgrind runs the interpreter some 50 times slower, so the process sets
``fastapi_hangup._backend.ARM_DELAY`` to 50 ms (from 1 ms): the watcher is armed as late,
relative to the work, as at full speed, and a request that is over before it would be at full
speed is here too. It prints each variant's instructions per request and the difference over
``plain``, of the same checkout.

    uv run python benchmarks/instructions.py [--requests 300] [--variants plain cancel_ctx ...]

``--tree NAME=PATH`` measures another checkout's variants too, in a process of its own, and
shows the difference of each variant of this checkout over the same one of that checkout.
``--python`` runs the measuring processes with another interpreter. Slow: each process takes
about 45 s under valgrind, most of it the interpreter's start and imports, then a few seconds
per variant; ``scripts/bench`` leaves it out. Needs valgrind (Debian: ``apt-get install
valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Seconds before a watcher is armed, under valgrind: 50 times the 1 ms of full speed.
ARM_DELAY = 0.05
WARM_UP = 100  # requests of each variant before the counted ones


def _asgi_request() -> tuple[dict[str, Any], Any, Any]:
    """``asgi_request()`` of this checkout's ``benchmarks/inprocess.py``, loaded by its path:
    in the measuring process, the package ``benchmarks`` is the measured checkout's."""
    spec = importlib.util.spec_from_file_location(
        "_inprocess", Path(__file__).with_name("inprocess.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    request: tuple[dict[str, Any], Any, Any] = module.asgi_request()
    return request


async def _run(variants: list[str], requests: int) -> list[str]:
    from benchmarks._apps import build, names

    apps = {v: build(v) for v in variants if v in names()}
    scope, receive, send = _asgi_request()
    loop = asyncio.get_running_loop()
    for app in apps.values():
        for _ in range(WARM_UP):
            await loop.create_task(app(dict(scope), receive, send))
    binascii.crc_hqx(b"start", 0)  # callgrind dumps: start-up and warm-up
    for app in apps.values():
        for _ in range(requests):
            await loop.create_task(app(dict(scope), receive, send))
        binascii.crc_hqx(b"section", 0)  # callgrind dumps: this variant's requests
    return list(apps)


def _child(variants: list[str], requests: int) -> None:
    import uvloop

    try:
        from fastapi_hangup import _backend
    except ImportError:  # a checkout from before the lazy watcher
        pass
    else:
        _backend.ARM_DELAY = ARM_DELAY
    print(json.dumps(uvloop.run(_run(variants, requests))))


def _total(dump: Path) -> int:
    """The instructions a callgrind dump counts: its ``summary:`` (or ``totals:``) line."""
    with dump.open() as lines:
        for line in lines:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise ValueError(f"{dump}: no summary line")


def _count(python: str, root: Path, variants: list[str], requests: int) -> dict[str, float]:
    """Instructions per request of each variant ``root``'s checkout can build."""
    from benchmarks._child import run_child

    with tempfile.TemporaryDirectory(prefix="instructions-") as folder:
        out = run_child(
            __file__,
            ["--requests", str(requests), "--variants", *variants],
            python=python,
            root=root,
            wrapper=(
                *("valgrind", "--tool=callgrind", "--dump-before=binascii_crc_hqx*"),
                f"--callgrind-out-file={folder}/callgrind.%p",
            ),
            # One hash seed: the layout of every dict and set is the same from run to run.
            env={"PYTHONHASHSEED": "0"},
        )
        measured: list[str] = json.loads(out)
        # One file per dump, callgrind.PID.N in order; the last (callgrind.PID) is the exit's.
        dumps = sorted(Path(folder).glob("callgrind.*.*"), key=lambda p: int(p.suffix[1:]))
        totals = [_total(dump) for dump in dumps]
    if len(totals) != len(measured) + 1:
        sys.exit(f"expected {len(measured) + 1} callgrind dumps, found {len(totals)}")
    return {v: total / requests for v, total in zip(measured, totals[1:], strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="counted, per variant")
    parser.add_argument("--variants", nargs="*", default=None)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to measure in")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.variants, args.requests)
        return
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not on PATH: install it (Debian: apt-get install valgrind)")
    from benchmarks.inprocess import _names_in

    variants = args.variants or _names_in(args.python)
    if "plain" not in variants:
        variants = ["plain", *variants]
    trees = [("", ROOT)] + [
        (name, Path(path).resolve()) for name, _, path in (t.partition("=") for t in args.tree)
    ]
    counts = {name: _count(args.python, root, variants, args.requests) for name, root in trees}

    others = [name for name, _ in trees[1:]]
    header = f"{'variant':<30}{'instr/request':>15}{'over plain':>12}"
    print(header + "".join(f"{'vs ' + name:>12}" for name in others))
    for name, _ in trees:
        base = counts[name].get("plain")
        for variant, count in counts[name].items():
            label = f"{variant}@{name}" if name else variant
            over = f"{count - base:+.0f}" if base is not None else "-"
            row = f"{label:<30}{count:>15.0f}{over:>12}"
            if not name:  # this checkout against each other one, variant by variant
                for other in others:
                    theirs = counts[other].get(variant)
                    row += f"{count - theirs:>+12.0f}" if theirs is not None else f"{'-':>12}"
            print(row)


if __name__ == "__main__":
    if "--child" not in sys.argv:  # a child imports the tree its PYTHONPATH names
        sys.path.insert(0, str(ROOT))
    main()
