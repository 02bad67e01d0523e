"""Blocking and CPU-bound work: a thread that checks, and a process that is killed."""

from __future__ import annotations

import time

from fastapi import FastAPI

from fastapi_hangup import CancelCtx, CancelOnDisconnect

app = FastAPI()


def resize_images(ctx: CancelOnDisconnect, count: int) -> int:
    """Blocking work in a worker thread: it stops itself between images."""
    for _ in range(count):
        ctx.check()  # raises ClientDisconnected (or DeadlineExceeded) once cancelled
        time.sleep(0.02)  # resize one image
    return count


def count_primes(limit: int) -> int:
    """Pure CPU work: no await, no check. Only killing its process stops it."""
    return sum(all(n % d for d in range(2, int(n**0.5) + 1)) for n in range(2, limit))


@app.post("/thumbnails")
async def thumbnails(ctx: CancelCtx, count: int = 100) -> dict[str, int]:
    return {"resized": await ctx.run_sync(resize_images, ctx, count)}


@app.get("/primes")
async def primes(ctx: CancelCtx, limit: int = 10_000) -> dict[str, int]:
    return {"primes": await ctx.run_in_process(count_primes, limit)}
