"""A run that waits to be interrupted: ``test_interruption.py`` runs pytest on this file.

Not collected by default (the name does not start with ``test_``): the test names this file
on pytest's command line, with the server to start in ``$FASTAPI_HANGUP_E2E_VICTIM_SERVER``.
The one test below starts that server (through the ``server`` fixture, as every real-server
test does) and nginx in front of it when nginx is installed, writes the ids of their main
processes to ``$FASTAPI_HANGUP_E2E_VICTIM_PIDS``, and waits for a signal.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from ._nginx import NGINX, ProxySettings, run_nginx
from ._params import on_servers
from ._servers import ALL_SERVERS, ServerView

PIDS_ENV = "FASTAPI_HANGUP_E2E_VICTIM_PIDS"
SERVER_ENV = "FASTAPI_HANGUP_E2E_VICTIM_SERVER"
#: Longer than the interrupting test waits: a run that is never interrupted fails.
PATIENCE = 30.0

_SERVER = ALL_SERVERS.get(os.environ.get(SERVER_ENV, ""), ALL_SERVERS["uvicorn-h11"])


@on_servers([_SERVER])
def test_serve_until_interrupted(server: ServerView, tmp_path: Path) -> None:
    if NGINX is None:
        _wait_for_a_signal([server.pid])
        return
    with run_nginx(tmp_path / "nginx", server.port, ProxySettings()) as proxy:
        _wait_for_a_signal([server.pid, proxy.pid])


def _wait_for_a_signal(pids: list[int]) -> None:
    target = Path(os.environ[PIDS_ENV])
    partial = target.with_suffix(".part")
    partial.write_text(json.dumps(pids))
    partial.replace(target)  # atomic: the reader never sees half a list
    time.sleep(PATIENCE)
    pytest.fail(f"no signal came within {PATIENCE} s")
