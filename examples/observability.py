"""Observability: the log record under plain uvicorn, and the on_stop hook (docs/observability.md).

Run it with ``uvicorn examples.observability:app`` (or ``fastapi run examples/observability.py``),
then ``curl -m 0.2 localhost:8000/search?q=x``: the server prints one line for the stopped
request.
"""

from __future__ import annotations

import collections
import logging

import anyio
from fastapi import FastAPI

from fastapi_hangup import StoppedRequest, add_cancellation

# --8<-- [start:logging]
# uvicorn and `fastapi run` configure their own loggers only: give ours a handler.
handler = logging.StreamHandler()
handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
hangup_log = logging.getLogger("fastapi_hangup")
hangup_log.addHandler(handler)
hangup_log.setLevel(logging.INFO)
# --8<-- [end:logging]

# --8<-- [start:hook]
stopped_by_route: collections.Counter[tuple[str, str]] = collections.Counter()


def count_stopped(stopped: StoppedRequest) -> None:
    # Called once per stopped request, on the event loop: keep it short.
    stopped_by_route[(stopped.route or stopped.path, stopped.cause.value)] += 1


app = FastAPI()
add_cancellation(app, on_stop=count_stopped)
# --8<-- [end:hook]


@app.get("/search")
async def search(q: str) -> dict[str, str]:
    await anyio.sleep(5)  # stand-in for a slow search
    return {"q": q}
