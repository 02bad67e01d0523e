"""The runnable examples under examples/ do what they say, run the way a newcomer runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_demo_stops_the_guarded_endpoint_and_not_the_unguarded_one() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # Table rows read "<endpoint>  <yes|no> <stopped>/<clients>  ...".
    stopped = dict(re.findall(r"^(/\w+) +(yes|no) +\d+/\d+ ", proc.stdout, re.MULTILINE))
    assert stopped == {"/guarded": "yes", "/unguarded": "no"}, proc.stdout
