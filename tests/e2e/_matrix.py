"""Record the real-server suite's outcome per server and check, for ``docs/server-matrix.md``.

When ``$FASTAPI_HANGUP_MATRIX`` names a file, every test that runs on a server appends one
JSON line to it: the table, the check (its row), the variant (``fin``, ``chunked``...), the
server (its column) and the outcome: ``passed``, ``xfailed`` (with the reason), ``failed``
or ``skipped`` (with the reason). ``docs/_matrix.py`` turns the file into the tables;
``scripts/server-matrix`` runs both.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

import pytest

from ._servers import Server

MATRIX_ENV = "FASTAPI_HANGUP_MATRIX"

#: The versions the matrix was measured with, written once at the top of the file.
VERSIONS = (
    "fastapi-hangup",
    "fastapi",
    "starlette",
    "anyio",
    "uvicorn",
    "httptools",
    "hypercorn",
    "h2",
    "granian",
    "daphne",
    "twisted",
    "gunicorn",
)


class MatrixRecorder:
    """Collects each test's phases and writes one line per test once it is torn down."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("w")
        self._write({"versions": _versions()})
        self._outcomes: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_env(cls) -> MatrixRecorder | None:
        """A recorder writing to ``$FASTAPI_HANGUP_MATRIX``, or ``None`` if it is not set."""
        target = os.environ.get(MATRIX_ENV)
        return cls(Path(target)) if target else None

    def add(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Take one phase (setup, call, teardown) of ``item``; write its line after teardown."""
        where = _where(item)
        if where is None:
            return
        outcome = self._outcomes.setdefault(item.nodeid, {**where, "outcome": "passed"})
        if report.when == "call" and hasattr(report, "wasxfail"):
            # A strict XPASS is a failure and reported as such; this is a real xfail.
            outcome.update(outcome="xfailed", reason=report.wasxfail)
        elif report.skipped:
            outcome.update(outcome="skipped", reason=_skip_reason(report))
        elif report.failed:
            outcome.update(outcome="failed", reason=f"{report.when}: {_first_line(report)}")
        if report.when == "teardown":
            self._write(self._outcomes.pop(item.nodeid))

    def close(self) -> None:
        """Flush and close the file."""
        self._file.close()

    def _write(self, line: dict[str, Any]) -> None:
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()


def _where(item: pytest.Item) -> dict[str, str] | None:
    # Only tests with a check mark are rows of the matrix. The column is the Server the test
    # is parametrized with, unless the mark names one (nginx tests run one fixed setup).
    marker = item.get_closest_marker("check")
    if marker is None:
        return None
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec else {}
    server = next((value for value in params.values() if isinstance(value, Server)), None)
    column = marker.kwargs.get("column")
    if column is None and server is None:
        return None
    column = column or str(server)
    variant = callspec.id if callspec else ""
    if server is not None:
        variant = variant.replace(server.name, "", 1)
    return {
        "table": marker.kwargs.get("table", "On each server"),
        "check": marker.args[0],
        "variant": "-".join(part for part in variant.split("-") if part),
        "server": column,
        "test": item.nodeid,
    }


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # (file, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return _first_line(report)


def _first_line(report: pytest.TestReport) -> str:
    text = getattr(report.longrepr, "reprcrash", None)
    message = getattr(text, "message", None) or str(report.longrepr)
    return message.strip().splitlines()[0][:300] if message.strip() else "?"


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
