"""The pytest plugin: a ``hangup_client`` fixture, on every backend, and no cost otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest_plugins = ["pytester"]

APP = """
import anyio
from contextlib import asynccontextmanager
from fastapi import FastAPI, Request
from fastapi_hangup import CancelCtx

@asynccontextmanager
async def lifespan(app):
    yield {"pool": "open"}

app = FastAPI(lifespan=lifespan)

@app.get("/slow")
async def slow(ctx: CancelCtx, request: Request):
    await anyio.sleep(30)
    return request.state.pool
"""

TESTS = """
import anyio, pytest
from fastapi_hangup.testing import assert_cancelled

async def test_hangs_up(hangup_client, hangup_transport, anyio_backend_name):
    with pytest.raises(TimeoutError), anyio.fail_after(0.05):
        await hangup_client.get("/slow")
    assert_cancelled(hangup_transport.last_request)
    assert hangup_transport.state == {"pool": "open"}

@pytest.mark.hangup(disconnect="repeat")
async def test_marker_configures_the_transport(hangup_transport, hangup_client):
    assert hangup_transport.disconnect == "repeat"
"""

INI = """
[pytest]
hangup_app = hangup_plugin_app:app
filterwarnings = error
"""


def test_the_fixture_runs_a_test_on_asyncio_and_trio(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(hangup_plugin_app=APP, test_plugin_user=TESTS)
    pytester.makeini(INI)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_hangs_up?asyncio? PASSED*", "*test_hangs_up?trio? PASSED*"])


def test_without_an_app_the_fixture_says_how_to_give_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("async def test_needs_app(hangup_client):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*hangup_app = *package.module:app*"])


def test_a_module_fixture_gives_the_app(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(hangup_plugin_app2=APP)
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            from hangup_plugin_app2 import app

            @pytest.fixture
            def hangup_app():
                return app

            @pytest.fixture
            def anyio_backend():
                return "asyncio"  # pinned, as for asyncpg

            async def test_pinned(hangup_client, anyio_backend_name):
                assert anyio_backend_name == "asyncio"
            """
        )
    )
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_loading_the_plugin_imports_neither_httpx_nor_the_kit() -> None:
    code = (
        "import sys, fastapi_hangup._pytest_plugin; "
        "print(sorted(m for m in sys.modules if m == 'httpx' or m.startswith('fastapi_hangup.t')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"  # neither httpx nor fastapi_hangup.testing


def test_the_plugin_is_registered_through_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    result.stdout.fnmatch_lines(["*hangup_client*"])
