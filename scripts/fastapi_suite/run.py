"""The driver: run FastAPI's own tests in the baseline and in each mode, and compare.

Usage: ``scripts/fastapi-suite [--mode MODE ...] [--workers N] [-- PYTEST_ARGS...]``.

For the installed FastAPI version it prepares (or reuses) ``.fastapi-suite/<version>/``
(see ``environment``) and runs FastAPI's ``tests`` there the way FastAPI's own
``scripts/test.sh`` does (``PYTHONPATH=docs_src``, xdist with ``--dist loadgroup``, FastAPI's
pytest configuration), plus the plugin that patches FastAPI for the mode and records every
test's outcome. Modes (all four by default): ``route``, ``dependency``, ``decorator``, ``app``; see
``patches``. The baseline always runs. ``PYTEST_ARGS`` replace the default target ``tests``
(``-- tests/test_tutorial -k openapi``), for quick iteration.

Not run, in any mode: tests that run FastAPI in another interpreter, where the patches do not
reach (the telemetry tests decorated with ``run_in_subprocess``, deselected by the plugin;
``test_fastapi_cli``), so they could only show flakiness.

The rule: a test counts as a difference when its outcome in a mode differs from the baseline
in the full runs *and* again when all differing tests are rerun once, in the baseline and in
the mode (just those tests); a difference that the rerun does not reproduce is listed as
flaky and ignored. A few differences are the mode's own by construction (the forced
dependency shows in ``route.dependencies``, a decorated endpoint is another object, the 499
mark sits in ``route.responses``): ``compare.INHERENT`` names each by mode, test and failure
text, and they are listed but allowed. The exit status is 1 when any mode has another
reproduced difference, 2 when a run could not be made, 0 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.fastapi_suite import MODE_ENV, REPORT_ENV, compare, environment
from scripts.fastapi_suite import MODES as ALL_MODES
from scripts.fastapi_suite.compare import Run
from scripts.fastapi_suite.environment import REPO, Suite

MODES = tuple(mode for mode in ALL_MODES if mode != "baseline")
# The plugin, importable by this name with scripts/ on PYTHONPATH (FastAPI's checkout has a
# scripts/ of its own); no pytest-sugar, whose progress bar would fill the log.
# --continue-on-collection-errors: a module that fails to import is a result, not the end;
# --tb=native: pytest's own tracebacks of a failure through Starlette and anyio take it
# about a second each, Python's a tenth of that.
PYTEST_OPTIONS = ["-p", "fastapi_suite.plugin", "-p", "no:sugar", "-q", "--tb=native"]
PYTEST_OPTIONS += ["--continue-on-collection-errors"]
# Pytest exit codes that leave a full record: all passed, some failed, none selected.
RECORDED = (0, 1, 5)
DESELECT = ("tests/test_fastapi_cli.py::test_fastapi_cli",)


def main(argv: Sequence[str] | None = None) -> int:
    options, pytest_args = _parse(list(sys.argv[1:] if argv is None else argv))
    version = importlib.metadata.version("fastapi")
    suite = environment.prepare(version)
    print(f"FastAPI {version}'s tests, from {suite.source.relative_to(REPO)}", flush=True)
    targets = pytest_args or ["tests"]
    try:
        baseline = _timed(suite, "baseline", targets, options.workers)
        modes = {mode: _timed(suite, mode, targets, options.workers) for mode in options.modes}
        reruns = _rerun(suite, baseline, modes, options.workers)
    except RunFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        return 2
    return _report(baseline, modes, reruns)


class RunFailed(Exception):
    """A pytest run ended without a usable record (a crash, a usage error)."""


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(
        prog="scripts/fastapi-suite", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--mode", action="append", choices=MODES, dest="modes", help="repeatable; default: all"
    )
    parser.add_argument("--workers", type=int, default=2, help="xdist workers (default 2)")
    options = parser.parse_args(argv[:split])
    options.modes = list(dict.fromkeys(options.modes or MODES))
    return options, argv[split + 1 :]


def _timed(suite: Suite, mode: str, targets: list[str], workers: int) -> Run:
    start = time.monotonic()
    run, summary = _pytest(suite, mode, targets, workers, name=mode)
    applied = ", ".join(f"{n} {what}" for what, n in sorted(run.applied.items())) or "nothing"
    print(f"{mode:>10}: {time.monotonic() - start:6.1f} s  {summary}", flush=True)
    print(f"{'':>10}  patched: {applied}", flush=True)
    return run


def _rerun(suite: Suite, baseline: Run, modes: dict[str, Run], workers: int) -> dict[str, Run]:
    """Rerun each mode's differing tests in the mode, and all of them in the baseline."""
    differing = {mode: compare.differing(baseline, run) for mode, run in modes.items()}
    everything = sorted({n for nodeids in differing.values() for n in nodeids})
    if not everything:
        return {}
    reruns = {}
    for mode, full in [("baseline", baseline), *modes.items()]:
        wanted = everything if mode == "baseline" else differing[mode]
        if not wanted:
            continue
        targets = compare.rerun_targets(full, wanted)
        reruns[mode] = Run({}, {}, 0, {})  # tests absent from the full run stay absent
        if targets:
            start = time.monotonic()
            reruns[mode], summary = _pytest(suite, mode, targets, workers, name=f"{mode}-rerun")
            print(
                f"{mode + ' rerun':>16}: {time.monotonic() - start:6.1f} s  {summary}", flush=True
            )
    return reruns


def _pytest(
    suite: Suite, mode: str, targets: list[str], workers: int, *, name: str
) -> tuple[Run, str]:
    """Run pytest once; return its record and its closing summary line."""
    report = suite.results / f"{name}.json"
    log = suite.results / f"{name}.log"
    report.unlink(missing_ok=True)
    args_file = suite.results / f"{name}.args"
    args_file.write_text("".join(f"{target}\n" for target in targets))
    command = [str(suite.python), "-m", "pytest", f"@{args_file}", *_pytest_options(workers)]
    env = _environment(suite, mode, report)
    with log.open("w") as output:
        status = subprocess.run(
            command, cwd=suite.source, env=env, stdout=output, stderr=subprocess.STDOUT
        ).returncode
    summary = _last_line(log)
    if status not in RECORDED or not report.exists():
        raise RunFailed(f"{name}: pytest exited {status} ({summary}); see {log.relative_to(REPO)}")
    return Run.load(report), summary


def _pytest_options(workers: int) -> list[str]:
    options = [*PYTEST_OPTIONS]
    if workers > 0:
        options += ["-n", str(workers), "--dist", "loadgroup"]
    for nodeid in DESELECT:
        options += ["--deselect", nodeid]
    return options


def _environment(suite: Suite, mode: str, report: Path) -> dict[str, str]:
    env = dict(os.environ)
    # docs_src, as FastAPI's scripts/test.sh has it; scripts/ for the plugin.
    env["PYTHONPATH"] = os.pathsep.join([str(suite.source / "docs_src"), str(REPO / "scripts")])
    env["VIRTUAL_ENV"] = str(suite.venv)
    env["PATH"] = os.pathsep.join([str(suite.venv / "bin"), env.get("PATH", "")])
    env[MODE_ENV] = mode
    env[REPORT_ENV] = str(report)
    return env


def _last_line(log: Path) -> str:
    lines = [line.strip("= \n") for line in log.read_text(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "(no output)")


def _report(baseline: Run, modes: dict[str, Run], reruns: dict[str, Run]) -> int:
    print(f"\nbaseline: {compare.format_counts(baseline)}")
    failing = 0
    for mode, run in modes.items():
        found = compare.differences(baseline, run, reruns.get("baseline"), reruns.get(mode))
        inherent = [d for d in found if d.reproduced and d.inherent(mode)]
        reproduced = [d for d in found if d.reproduced and not d.inherent(mode)]
        flaky = [d for d in found if not d.reproduced]
        print(f"\n{mode}: {compare.format_counts(run)}")
        print(f"  {len(reproduced)} tests differ from the baseline", end="")
        print(f" ({len(flaky)} more differed once, not on rerun: flaky, ignored)" if flaky else "")
        for line in compare.format_differences(reproduced):
            print(line)
        if inherent:
            print("  inherent to the mode (allowed, see compare.INHERENT):")
            print("\n".join(f"      {d.nodeid}: {d.inherent(mode)}" for d in inherent))
        if flaky:
            print("  flaky (not reproduced on rerun):")
            print("\n".join(f"      {d.nodeid} ({d.change})" for d in flaky))
        slower = compare.slowest_changes(baseline, run)
        if slower:
            print("  slower than in the baseline:")
            print("\n".join(slower))
        failing += bool(reproduced)
    verdict = "transparent" if not failing else f"{failing} of {len(modes)} modes differ"
    print(f"\nfastapi-suite: {verdict}")
    return 1 if failing else 0
