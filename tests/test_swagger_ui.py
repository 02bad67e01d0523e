"""The OpenAPI mark as people see it: Swagger UI rendered by headless Chromium.

``tests/swagger_app.py`` runs under a real uvicorn on a free loopback port and serves
Swagger UI from the ``swagger-ui-dist`` npm package (FastAPI's default ``/docs`` loads it
from a CDN). Chromium renders ``/docs`` and dumps the DOM; the tests read it.

Needs ``chromium`` on PATH, and either ``npm`` with access to the npm registry or
``SWAGGER_UI_DIST`` naming an unpacked ``swagger-ui-dist`` package folder. Without them the
tests skip, unless ``FASTAPI_HANGUP_REQUIRE_BROWSER=1`` (set it in CI) makes that a failure.
"""

from __future__ import annotations

import contextlib
import html
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests._helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SWAGGER_UI_DIST_SPEC = "swagger-ui-dist@5"  # the major version FastAPI's CDN URL names
REQUIRE_ENV = "FASTAPI_HANGUP_REQUIRE_BROWSER"
DIST_ENV = "SWAGGER_UI_DIST"  # read by tests/swagger_app.py
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
    "--dump-dom",
)


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail where the environment promises the browser test can run."""
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{reason} (and {REQUIRE_ENV} is set)")
    pytest.skip(reason)


# -- Swagger UI's files, the server, the browser ---------------------------------------------


def swagger_ui_dist(tmp: Path) -> Path:
    """A folder with Swagger UI's dist files: ``SWAGGER_UI_DIST``, or unpacked from npm."""
    preset = os.environ.get(DIST_ENV)
    if preset:
        return Path(preset)
    npm = shutil.which("npm")
    if npm is None:
        unavailable(f"npm is not installed, and {DIST_ENV} names no swagger-ui-dist folder")
    proc = subprocess.run(
        [str(npm), "pack", SWAGGER_UI_DIST_SPEC, "--pack-destination", str(tmp), "--silent"],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
    )
    tarballs = list(tmp.glob("swagger-ui-dist-*.tgz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        unavailable(f"`npm pack {SWAGGER_UI_DIST_SPEC}` failed: {proc.stderr.strip()[-500:]}")
    with tarfile.open(tarballs[0]) as tarball:
        tarball.extractall(tmp, filter="data")
    return tmp / "package"


def answers(port: int, path: str) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=1)
    try:
        connection.request("GET", path)
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in a session of its own, and everything it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    # Stragglers of the group (renderers, workers) too; the group id stays reserved while
    # any of them lives, so this cannot reach an unrelated process.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=5)


@contextlib.contextmanager
def uvicorn_serving_the_app(dist: Path, log: Path, app: str = "app") -> Iterator[int]:
    """Serve ``tests.swagger_app:<app>`` on a free loopback port; yield the port."""
    port = free_port(HOST)
    env = {
        **os.environ,
        DIST_ENV: str(dist),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-m", "uvicorn", f"tests.swagger_app:{app}"]
    with log.open("wb") as output:
        server = subprocess.Popen(
            [*command, "--host", HOST, "--port", str(port), "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        for _ in range(400):  # 20 s
            if server.poll() is not None or answers(port, "/openapi.json"):
                break
            time.sleep(0.05)
        if not answers(port, "/openapi.json"):
            pytest.fail(f"uvicorn did not serve the app on port {port}:\n{log.read_text()}")
        yield port
    finally:
        stop_group(server)


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """Let headless Chromium render ``url`` and return the DOM it ends up with."""
    browser = subprocess.Popen(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
        env={**os.environ, "HOME": str(profile)},  # crash reports and caches stay in tmp
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = browser.communicate(timeout=45)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not render {url} within 45 s")
    finally:
        stop_group(browser)
    assert browser.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode()


@pytest.fixture(scope="module")
def doms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Swagger UI's DOM for each app of ``tests.swagger_app``, rendered once for this module."""
    chromium = shutil.which("chromium")
    if chromium is None:
        unavailable("chromium is not installed (Debian: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("swagger-ui")
    dist = swagger_ui_dist(tmp)
    rendered = {}
    for app in ("app", "wide_app", "plain_app"):
        with uvicorn_serving_the_app(dist, tmp / f"{app}.log", app) as port:
            url = f"http://{HOST}:{port}/docs"
            rendered[app] = dump_dom(str(chromium), url, tmp / f"profile-{app}")
    return rendered


@pytest.fixture
def dom(doms: dict[str, str]) -> str:
    """The route-class app's Swagger UI."""
    return doms["app"]


# -- Reading the rendered page ----------------------------------------------------------------


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def tag_sections(dom: str) -> dict[str, str]:
    """Swagger UI's tag groups: tag name -> the group's HTML, in document order."""
    sections = {}
    for part in dom.split('<div class="opblock-tag-section')[1:]:
        tag = re.search(r'data-tag="([^"]*)"', part)
        assert tag is not None, part[:500]
        sections[html.unescape(tag.group(1))] = part
    return sections


def operation_blocks(section: str) -> dict[str, str]:
    """The operations of a tag group: ``"GET /path"`` -> the operation's HTML."""
    blocks = {}
    for part in re.split(r'(?=<div class="opblock opblock-)', section)[1:]:
        method = re.search(r'class="opblock-summary-method">\s*(\w+)', part)
        path = re.search(r'data-path="([^"]*)"', part)
        assert method is not None, part[:500]
        assert path is not None, part[:500]
        blocks[f"{method.group(1)} {html.unescape(path.group(1))}"] = part
    return blocks


def response_rows(operation: str) -> dict[str, str]:
    """The operation's documented responses: status code -> the row's text."""
    rows = re.split(r'(?=<tr class="response )', operation)[1:]
    found = {}
    for row in rows:
        code = re.search(r'data-code="([^"]*)"', row)
        assert code is not None, row[:500]
        found[code.group(1)] = text_of(row.split("</tr>", 1)[0])
    return found


# -- What the reader of /docs sees --------------------------------------------------------------


def test_swagger_ui_groups_the_cancellable_operation_under_its_tag(dom: str) -> None:
    sections = tag_sections(dom)

    assert list(sections) == ["cancellable", "default"]
    assert list(operation_blocks(sections["cancellable"])) == ["GET /reports/{name}"]
    assert list(operation_blocks(sections["default"])) == ["POST /orders"]


def test_swagger_ui_shows_the_499_response_of_the_cancellable_operation(dom: str) -> None:
    operation = operation_blocks(tag_sections(dom)["cancellable"])["GET /reports/{name}"]
    responses = response_rows(operation)

    assert list(responses) == ["200", "422", "499"]
    assert responses["499"].startswith(
        "499 Client Closed Request: the server stopped working on this request because the "
        "client hung up."
    )


def test_swagger_ui_shows_the_vendor_extension_of_the_cancellable_operation(dom: str) -> None:
    operation = operation_blocks(tag_sections(dom)["cancellable"])["GET /reports/{name}"]
    text = text_of(operation)

    assert "x-cancel-on-disconnect" in text
    assert '"methods":["GET"]' in text.replace(" ", "")


def test_swagger_ui_shows_no_mark_on_the_operation_that_is_not_cancellable(dom: str) -> None:
    operation = operation_blocks(tag_sections(dom)["default"])["POST /orders"]

    assert list(response_rows(operation)) == ["200", "422"]
    assert "x-cancel-on-disconnect" not in text_of(operation)
    assert "Client Closed Request" not in text_of(operation)


def test_swagger_ui_shows_the_app_wide_mark_on_a_plain_route(doms: dict[str, str]) -> None:
    sections = tag_sections(doms["wide_app"])
    assert list(sections) == ["stops on hang-up", "default"]
    operation = operation_blocks(sections["stops on hang-up"])["GET /search"]
    assert list(response_rows(operation)) == ["200", "422", "499"]
    assert "x-cancel-on-disconnect" in text_of(operation)
    assert list(operation_blocks(sections["default"])) == ["POST /orders"]


def test_swagger_ui_shows_the_decorator_alone_in_the_description(doms: dict[str, str]) -> None:
    (section,) = tag_sections(doms["plain_app"]).values()
    operation = operation_blocks(section)["GET /summaries/{name}"]
    text = text_of(operation)
    assert "Summarize a document." in text
    assert (
        "Cancellable: if the client hangs up before the response is complete, the server "
        "stops working on the request." in text
    )
