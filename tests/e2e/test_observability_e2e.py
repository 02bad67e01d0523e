"""The logging setup of docs/observability.md, under the commands users actually type.

``uvicorn examples.observability:app`` and ``fastapi run examples/observability.py`` each
serve the example on a free loopback port; a real client hangs up mid-request and the
server's own output must show the one record of the stopped request.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests._helpers import free_port

from ._client import Connection
from ._events import poll
from ._servers import ROOT, Server, run_command

pytestmark = pytest.mark.e2e

RECORD = "INFO:     fastapi_hangup: GET /search 499 Client Closed Request: work stopped after"
COMMANDS = {
    "uvicorn app:app": [sys.executable, "-m", "uvicorn", "examples.observability:app"],
    "fastapi run": [
        str(Path(sys.executable).parent / "fastapi"),
        "run",
        str(ROOT / "examples" / "observability.py"),
    ],
}


@pytest.mark.parametrize("command", COMMANDS, ids=list(COMMANDS))
def test_the_record_shows_in_the_servers_own_output(command: str, tmp_path: Path) -> None:
    argv = COMMANDS[command]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    port = free_port()
    server = Server(command, "")
    log = tmp_path / "server.log"
    options = ["--host", "127.0.0.1", "--port", str(port)]
    with run_command(server, [*argv, *options], port, log, ready_path="/docs") as running:
        with Connection(port) as connection:
            connection.send_request("GET", "/search?q=x")
            assert not poll(lambda: RECORD in running.log(), timeout=0.2)  # it is working
            connection.hang_up()
        assert poll(lambda: RECORD in running.log(), timeout=5.0), running.log()
        lines = [line for line in running.log().splitlines() if "fastapi_hangup" in line]
        print("\n".join(lines))
        assert len(lines) == 1, lines
