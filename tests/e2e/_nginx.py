"""nginx as a reverse proxy in front of a running server, with a generated configuration.

The site (upstream, server, location) is ``examples/nginx.conf``, the configuration the docs
show, with the port numbers and the settings under test put in. nginx runs in the foreground
(``daemon off``) as a single process (``master_process off``: no switching to another user,
no workers to chase at the end) in a folder of its own: configuration, pid file, error and
access logs, temp folders. It listens on a free loopback port and is stopped like any server
(its process group, SIGTERM then SIGKILL).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests._helpers import free_port

from ._servers import ROOT, RunningServer, Server, run_command

NGINX = shutil.which("nginx")


@dataclass(frozen=True)
class ProxySettings:
    """The proxy settings that decide whether a hang-up reaches the app.

    The defaults are nginx's own defaults.
    """

    ignore_client_abort: bool = False
    """``proxy_ignore_client_abort``: on, nginx keeps the upstream request going after the
    client left, so the app never learns of it."""
    buffering: bool = True
    """``proxy_buffering``: buffer the upstream response."""
    request_buffering: bool = True
    """``proxy_request_buffering``: read the whole request body before contacting upstream."""
    read_timeout: float = 60.0
    """``proxy_read_timeout`` in seconds: how long nginx waits between two reads upstream."""


#: The site: the project's documented nginx configuration, with the settings of a test.
EXAMPLE = ROOT / "examples" / "nginx.conf"

_MAIN = """\
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
events {{
    worker_connections 64;
}}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    include {folder}/site.conf;
}}
"""


def site_config(port: int, upstream: int, settings: ProxySettings) -> str:
    """``examples/nginx.conf`` on ``port``, in front of ``127.0.0.1:upstream``, with ``settings``.

    Raises:
        ValueError: if the example does not set one of these directives exactly once.
    """

    def on_off(value: bool) -> str:
        return "on" if value else "off"

    text = EXAMPLE.read_text()
    values = {
        "server": f"127.0.0.1:{upstream}",
        "listen": f"127.0.0.1:{port}",
        "proxy_ignore_client_abort": on_off(settings.ignore_client_abort),
        "proxy_buffering": on_off(settings.buffering),
        "proxy_request_buffering": on_off(settings.request_buffering),
        "proxy_read_timeout": f"{round(settings.read_timeout * 1000)}ms",
    }
    for directive, value in values.items():
        pattern = rf"^(\s*{directive}\s+)[^;\n]+;"
        text, count = re.subn(pattern, rf"\g<1>{value};", text, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"{EXAMPLE} must set {directive} exactly once, not {count} times")
    return text


class RunningProxy:
    """A started nginx: its port and its logs."""

    def __init__(self, running: RunningServer, folder: Path) -> None:
        self.port = running.port
        self.pid = running.pid
        self.folder = folder
        self._running = running

    def alive(self) -> bool:
        """Whether nginx is still running."""
        return self._running.alive()

    def error_log(self) -> str:
        """nginx's error log (level ``info``: it notes every client that closed early)."""
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        """nginx's access log."""
        path = self.folder / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def run_nginx(folder: Path, upstream: int, settings: ProxySettings) -> Iterator[RunningProxy]:
    """Run nginx in ``folder`` in front of ``127.0.0.1:upstream`` while the block runs.

    Ready once a GET of ``/ready`` through it gets an HTTP response.

    Raises:
        RuntimeError: if nginx is not on PATH, exits, or does not answer in time.
    """
    if NGINX is None:
        raise RuntimeError("nginx is not on PATH")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (folder / "site.conf").write_text(site_config(port, upstream, settings))
    conf = folder / "nginx.conf"
    conf.write_text(_MAIN.format(folder=folder))
    argv = [NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    with run_command(
        Server("nginx", ""), argv, port, folder / "output.log", ready_path="/ready"
    ) as running:
        yield RunningProxy(running, folder)
