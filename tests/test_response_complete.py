"""The disconnect after a complete response is not a hang-up, however the response is sent.

Every server sends ``http.disconnect`` as soon as the response body is complete. A guard still
watching then would log a false 499 and cancel the response's BackgroundTasks. Regression
tests for ``FastAPI(dependencies=[Depends(cancel_ctx)])`` with file responses, which FastAPI's
own suite found.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from fastapi_hangup import cancel_ctx
from fastapi_hangup.testing import HangUpClient, assert_not_cancelled
from tests._helpers import hang_up_records

pytestmark = pytest.mark.anyio


def file_app(tmp_path: Path, ran: list[str]) -> FastAPI:
    page = tmp_path / "index.html"
    page.write_text("<h1>hello</h1>" * 1000)
    app = FastAPI(dependencies=[Depends(cancel_ctx)])

    @app.get("/file")
    async def file() -> FileResponse:
        await anyio.sleep(0.01)  # the watcher is armed
        return FileResponse(page, background=BackgroundTask(ran.append, "background"))

    assets = tmp_path / "dist"
    assets.mkdir()
    (assets / "index.html").write_text("<p>frontend</p>")
    app.frontend("/", directory=assets)
    return app


@pytest.mark.parametrize("disconnect", ["once", "repeat"])
async def test_file_response_under_an_app_wide_dependency_is_not_a_hang_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, disconnect: str
) -> None:
    caplog.set_level(logging.INFO, "fastapi_hangup")
    ran: list[str] = []
    client = HangUpClient(file_app(tmp_path, ran), disconnect=disconnect)  # type: ignore[arg-type]

    result = await client.get("/file")

    assert result.status_code == 200
    assert result.body == b"<h1>hello</h1>" * 1000
    assert_not_cancelled(result)
    assert ran == ["background"]
    assert hang_up_records(caplog) == []


async def test_frontend_files_under_an_app_wide_dependency_are_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "fastapi_hangup")
    client = HangUpClient(file_app(tmp_path, []))

    result = await client.get("/index.html")

    assert result.status_code == 200
    assert result.body == b"<p>frontend</p>"
    assert hang_up_records(caplog) == []
