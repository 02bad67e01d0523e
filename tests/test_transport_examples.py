"""The testing page's examples (examples/testing_*.py) pass, run by pytest as a user runs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/testing_*.py"))

# Each example's tests, and on how many backends they run (anyio's default: asyncio, trio).
EXPECTED = {
    "testing_asyncio_only.py::test_the_query_stops_on_asyncio": 1,
    "testing_deadline.py::test_translation_answers_504_past_its_deadline": 2,
    "testing_middleware_lifespan.py::test_a_client_that_waits_gets_the_report": 2,
    "testing_middleware_lifespan.py::test_the_query_stops_and_gives_its_connection_back": 2,
    "testing_must_not_stop.py::test_the_charge_completes_although_the_client_left": 2,
    "testing_must_stop.py::test_summary_stops_when_the_client_gives_up": 2,
    "testing_side_by_side.py::test_summary_stops": 2,
    "testing_side_by_side.py::test_summary_stops_with_hang_up_client": 2,
    "testing_streaming.py::test_the_export_stops_when_the_reader_leaves": 2,
    "testing_websocket.py::test_the_generation_stops_when_the_tab_closes": 2,
    "testing_without_plugin.py::test_summary_stops_with_a_hand_made_client": 2,
}


PYTEST = [sys.executable, "-m", "pytest", "-v", "--no-cov", "-p", "no:cacheprovider"]


def test_every_testing_example_passes_on_its_backends() -> None:
    proc = subprocess.run(
        [*PYTEST, "-o", "python_files=testing_*.py", *map(str, EXAMPLES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed: dict[str, int] = {}
    for test in re.findall(r"examples/(\S+?)(?:\[\w+\])? PASSED", proc.stdout):
        passed[test] = passed.get(test, 0) + 1
    assert passed == EXPECTED
