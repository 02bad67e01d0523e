"""A sync endpoint that checks for a hang-up between steps."""

from __future__ import annotations

import time

from fastapi import FastAPI

from fastapi_hangup import CancelCtx

app = FastAPI()


@app.get("/crunch")
def crunch(ctx: CancelCtx, steps: int = 50) -> dict[str, int]:
    done = 0
    for _ in range(steps):
        if ctx.is_cancelled:  # the client has gone: stop, nobody will read the result
            break
        time.sleep(0.02)  # one step of blocking work in the worker thread
        done += 1
    return {"done": done}
