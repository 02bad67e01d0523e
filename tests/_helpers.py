"""Helpers every test module shares: one copy each (log records, polling, free ports)."""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable

import anyio
import pytest

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def hang_up_records(
    caplog: pytest.LogCaptureFixture, status: int | None = None
) -> list[logging.LogRecord]:
    """The ``fastapi_hangup`` records of stopped requests (optionally those with ``status``)."""
    return [
        record
        for record in caplog.records
        if record.name == "fastapi_hangup"
        and hasattr(record, "status_code")
        and (status is None or getattr(record, "status_code", None) == status)
    ]


async def eventually(predicate: Callable[[], object], within: float = 3.0) -> bool:
    """Poll ``predicate`` on the event loop every 5 ms until it holds or ``within`` seconds pass."""
    for _ in range(math.ceil(within / 0.005)):
        if predicate():
            return True
        await anyio.sleep(0.005)
    return bool(predicate())
