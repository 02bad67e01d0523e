"""An app guarded app-wide, ``FastAPI(dependencies=[Depends(cancel_ctx)])``, serving files.

Served as ``tests.e2e.files_app:app`` for ``test_files_e2e.py``. Every disconnect here comes
after a complete response, which every server reports: a guard still watching would take it
for a hang-up, log a false 499 and cancel the response's background task.

- ``GET /file?rid=``: a short await, then a ``FileResponse`` of :data:`FILE_SIZE` bytes with
  a background task (:func:`~._app_kit.finish_later`: ``background-done`` after 0.2 s);
- ``/static-site/``: ``app.frontend()`` serving an ``index.html``.

The files are written on import into ``$FASTAPI_HANGUP_E2E_FILES`` (daphne runs no
lifespan); without that variable (the test process, importing the constants) they are not.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import anyio
from fastapi import Depends
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from fastapi_hangup import cancel_ctx

from ._app_kit import finish_later, make_app
from ._events import FILES_ENV, record

FILE_SIZE = 1024 * 1024
FRONTEND_INDEX = b"<!doctype html><title>static site</title><p>served by app.frontend()</p>\n"


def file_content() -> bytes:
    """The file's bytes: the same on every run, so the test can check them."""
    return random.Random(1).randbytes(FILE_SIZE)


def _write(path: Path, content: bytes) -> None:
    # gunicorn's two workers import this at once: each writes its own file, then renames it.
    if path.exists() and path.read_bytes() == content:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.part")
    partial.write_bytes(content)
    partial.replace(path)


_folder = Path(os.environ.get(FILES_ENV, "/nonexistent")) / "files_app"
_file = _folder / "one-mib.bin"
_site = _folder / "site"
if FILES_ENV in os.environ:
    _write(_file, file_content())
    _write(_site / "index.html", FRONTEND_INDEX)

app = make_app(dependencies=[Depends(cancel_ctx)])


@app.get("/file")
async def file(rid: str) -> FileResponse:
    record(rid, "start")
    await anyio.sleep(0.05)  # long enough for the hang-up watcher to be armed
    record(rid, "end", exc=None)
    return FileResponse(_file, background=BackgroundTask(finish_later, rid))


app.frontend("/static-site", directory=_site, check_dir=FILES_ENV in os.environ)
