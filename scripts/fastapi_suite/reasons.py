"""One line that says why a test failed, for the comparison's report.

pytest's own crash line names the outermost exception, which for the failures this check
finds is often a wrapper: pytest's ``PytestUnraisableExceptionWarning`` (an exception
ignored in a finalizer, made an error by FastAPI's ``filterwarnings = error``), or an
exception group of them. ``describe`` looks through those to what was raised; ``from_text``
reads a line out of a report's text where only that is left (a module that failed to import).
"""

from __future__ import annotations

import re
import traceback

import pytest

LIMIT = 300
_WRAPPERS = (pytest.PytestUnraisableExceptionWarning, pytest.PytestUnhandledThreadExceptionWarning)


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``, through pytest's wrappers and exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = dict.fromkeys(describe(inner) for inner in exc.exceptions)
        return shorten(f"{type(exc).__name__}[{' | '.join(leaves)}]")
    if isinstance(exc, _WRAPPERS) and exc.__cause__ is not None:
        return describe(exc.__cause__)
    return shorten(first_line("".join(traceback.format_exception_only(exc))))


def from_text(text: str) -> str:
    """The exception's line in a report's text: pytest's first ``E`` line, else the last
    unindented line (a native traceback ends with the exception)."""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line[1:] for line in lines if line.startswith("E ")]
    if errors:
        return shorten(first_line("\n".join(errors)))
    unindented = [line for line in lines if not line[0].isspace()]
    return shorten(unindented[-1] if unindented else first_line(text))


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def shorten(line: str) -> str:
    line = re.sub(r"\s+", " ", line).strip()
    return line if len(line) <= LIMIT else line[: LIMIT - 1] + "…"
