"""A chain of services on loopback: nginx → A → B → C, each ``cascade_app`` in a uvicorn.

Used by ``test_cascade_e2e.py`` and ``benchmarks/cascade.py``. The services start last one
first (each needs the next one's port), all write to one events file (each event names its
service), and everything stops when the block ends: nginx, then A, B and C, each a process
group of its own (``_spawn.py``), also when the run is interrupted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ._events import EVENTS_ENV, Event, EventLog, poll
from ._nginx import ProxySettings, RunningProxy, run_nginx
from ._servers import HOST, UVICORN_HTTPTOOLS, RunningServer, Server, run_server

SERVICES = ("A", "B", "C")
APP = "tests.e2e.cascade_app:app"


@dataclass
class Cascade:
    """A running chain: nginx's port, the services by name, what they record."""

    proxy: RunningProxy
    services: dict[str, RunningServer]
    events: EventLog

    @property
    def port(self) -> int:
        """nginx's port: the edge, where clients connect."""
        return self.proxy.port

    def event(self, rid: str, service: str, name: str) -> Event | None:
        """The ``name`` event of ``service`` for request ``rid``, if it was recorded yet."""
        found = (e for e in self.events.of(rid) if e["service"] == service and e["event"] == name)
        return next(found, None)

    def wait_for(self, rid: str, service: str, name: str, timeout: float = 10.0) -> Event:
        """Return ``service``'s ``name`` event for ``rid``, waiting up to ``timeout`` seconds.

        Raises:
            AssertionError: if it was not recorded in time.
        """
        found = poll(lambda: self.event(rid, service, name), timeout)
        if found is None:
            raise AssertionError(
                f"no {name!r} event of {service} for request {rid} within {timeout} s; "
                f"its events: {self.events.of(rid)}"
            )
        return found

    def logs(self) -> str:
        """Every service's output and nginx's error log, for a failing test's report."""
        parts = [f"----- {name} -----\n{s.log()}" for name, s in self.services.items()]
        return "\n".join([*parts, f"----- nginx -----\n{self.proxy.error_log()}"])


@contextlib.contextmanager
def run_cascade(
    folder: Path,
    *,
    guarded: bool = True,
    budget: float = 0.5,
    servers: Mapping[str, Server] | None = None,
) -> Iterator[Cascade]:
    """Run nginx → A → B → C while the block runs.

    Args:
        folder: where the logs, the events file and nginx's files go.
        guarded: ``False`` serves the same apps without fastapi-hangup (a reference).
        budget: A's budget on ``GET /chain/budget``, in seconds.
        servers: the server of a service by name, where it is not uvicorn (httptools).
    """
    folder.mkdir(parents=True, exist_ok=True)
    events = EventLog(folder / "events.jsonl")
    services: dict[str, RunningServer] = {}
    with contextlib.ExitStack() as stack:
        next_url = ""
        for name in reversed(SERVICES):
            env = {
                EVENTS_ENV: str(events.path),
                "CASCADE_NAME": name,
                "CASCADE_NEXT": next_url,
                "CASCADE_GUARDED": "1" if guarded else "0",
                "CASCADE_BUDGET": str(budget),
            }
            log = folder / f"{name}.log"
            running = stack.enter_context(
                run_server(
                    (servers or {}).get(name, UVICORN_HTTPTOOLS),
                    APP,
                    log,
                    env=env,
                    ready_path="/ready",
                )
            )
            services[name] = running
            next_url = f"http://{HOST}:{running.port}"
        proxy = stack.enter_context(
            run_nginx(folder / "nginx", services["A"].port, ProxySettings())
        )
        yield Cascade(proxy, dict(sorted(services.items())), events)
