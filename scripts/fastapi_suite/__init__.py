"""Run FastAPI's own test suite with fastapi-hangup forced onto every app.

A transparency check: FastAPI's tests, from the sdist of the installed FastAPI, run once as
they are (the baseline) and once per mode in which every route goes through fastapi-hangup;
any test whose outcome changes is a place where the package is not transparent. Run it with
``scripts/fastapi-suite``; ``run`` is the driver, ``plugin`` the pytest plugin that patches
FastAPI inside the test run, ``compare`` the comparison with the baseline.
"""

MODES = ("baseline", "route", "dependency", "decorator", "app")
MODE_ENV = "FASTAPI_HANGUP_SUITE_MODE"
"""Names the mode of a test run, for the plugin."""
REPORT_ENV = "FASTAPI_HANGUP_SUITE_REPORT"
"""Names the JSON file the plugin writes the outcomes to."""
