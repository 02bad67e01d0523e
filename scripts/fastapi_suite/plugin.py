"""The pytest plugin for FastAPI's test run: patch FastAPI for a mode, record every outcome.

Load it with ``-p fastapi_suite.plugin`` (``scripts/`` on ``PYTHONPATH``). It reads the
mode from ``FASTAPI_HANGUP_SUITE_MODE`` and patches FastAPI (see ``patches``) in
``pytest_load_initial_conftests``, before any conftest or test module builds an app; xdist
workers load it too and patch themselves. Tests that rerun themselves in a fresh interpreter
(FastAPI's telemetry tests, through ``run_in_subprocess``) are deselected: no patch reaches
them there.

The controller (the only process under xdist that sees every report) writes one outcome per
test to the JSON file named by ``FASTAPI_HANGUP_SUITE_REPORT``: ``passed``, ``failed``,
``skipped``, ``xfailed``, ``xpassed`` or ``error`` (setup or teardown failed, or the module
failed to collect), with a one-line reason (see ``reasons``; the worker that saw the
exception describes it), the time each test took, and what the patches changed.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from . import MODE_ENV, REPORT_ENV, patches, reasons

_REASON = "fastapi_suite_reason"  # a user property: xdist carries it to the controller
_FAILURES = ("failed", "error")

_results: dict[str, dict[str, str]] = {}
_applied: Counter[str] = Counter()  # what the workers' patches changed, added up
_workers: list[str] = []
_seconds: defaultdict[str, float] = defaultdict(float)  # setup + call + teardown, per test


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests() -> None:
    """Patch FastAPI before the first conftest (and so the first test module) is imported."""
    patches.apply(os.environ.get(MODE_ENV, "baseline"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests that run themselves in a fresh interpreter: no patch reaches it."""
    elsewhere = [item for item in items if _runs_in_subprocess(item)]
    if elsewhere:
        config.hook.pytest_deselected(items=elsewhere)
        skip = {id(item) for item in elsewhere}
        items[:] = [item for item in items if id(item) not in skip]


def _runs_in_subprocess(item: pytest.Item) -> bool:
    """FastAPI's telemetry tests wrap themselves in ``tests/test_telemetry/_subprocess.py``."""
    code = getattr(getattr(item, "obj", None), "__code__", None)
    return code is not None and Path(code.co_filename).name == "_subprocess.py"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Where the exception itself is at hand, describe it for the controller."""
    report = yield
    if report.failed and call.excinfo is not None:
        report.user_properties.append((_REASON, reasons.describe(call.excinfo.value)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Fold one phase's report into its test's outcome.

    Setup, when it does not pass, decides (the call does not run); otherwise the call does,
    and a teardown error turns anything but a failure into ``error``.
    """
    _seconds[report.nodeid] += report.duration
    outcome = _phase_outcome(report)
    if outcome is None:
        return
    previous = _results.get(report.nodeid)
    if previous is None or (outcome == "error" and previous["outcome"] not in _FAILURES):
        _results[report.nodeid] = {"outcome": outcome, "reason": _reason(report)}


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A module that fails to import (or skips itself) stands for the tests it would hold."""
    if report.failed:
        _results[report.nodeid] = {"outcome": "error", "reason": _reason(report)}
    elif report.skipped and report.nodeid:
        _results.setdefault(report.nodeid, {"outcome": "skipped", "reason": _reason(report)})


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Under xdist: add up what each worker's patches changed."""
    _workers.append(str(getattr(node, "gateway", node)))
    _applied.update(getattr(node, "workeroutput", {}).get("fastapi_suite_applied", {}))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the outcomes (controller), or hand the patch counts to the controller (worker)."""
    config = session.config
    applied = dict(patches.applied)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fastapi_suite_applied"] = applied
        return
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    if not _workers:
        _applied.update(applied)  # no xdist: this process ran the tests itself
    document = {
        "mode": os.environ.get(MODE_ENV, "baseline"),
        "exitstatus": int(exitstatus),
        "applied": dict(_applied),
        "results": _results,
        "seconds": {nodeid: round(seconds, 3) for nodeid, seconds in _seconds.items()},
    }
    Path(target).write_text(json.dumps(document, indent=1, sort_keys=True))


def _phase_outcome(report: pytest.TestReport) -> str | None:
    xfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            return "xpassed" if xfail else "passed"
        if report.skipped:
            return "xfailed" if xfail else "skipped"
        return "failed"
    if report.failed:
        return "error"
    if report.skipped:  # a skip or an xfail raised by a fixture or a mark, in setup
        return "xfailed" if xfail else "skipped"
    return None  # a setup or teardown that passed says nothing


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The one line that says what happened: the exception, or a skip's reason."""
    if report.passed:
        return ""
    described = dict(getattr(report, "user_properties", ())).get(_REASON)
    longrepr = report.longrepr
    crash = getattr(longrepr, "reprcrash", None)
    if described is not None:
        line = str(described)
    elif isinstance(longrepr, tuple):  # a skip: (path, line, "Skipped: reason")
        line = reasons.shorten(str(longrepr[2]))
    elif crash is not None:
        line = reasons.shorten(reasons.first_line(str(crash.message)))
    else:
        line = reasons.from_text(str(longrepr or getattr(report, "wasxfail", "")))
    when = getattr(report, "when", None)
    return f"[{when}] {line}" if when in ("setup", "teardown") else line
