"""What a hang-up cannot stop: C code in a worker thread. A worker process can be killed."""

from __future__ import annotations

import hashlib

from fastapi import FastAPI

from fastapi_hangup import CancelCtx

app = FastAPI()
finished: list[int] = []  # rounds of every derivation that ran to its end


def derive_key(rounds: int) -> str:
    """C code (OpenSSL's PBKDF2): no Python runs inside it, so nothing can interrupt it."""
    key = hashlib.pbkdf2_hmac("sha256", b"password", b"salt", rounds)
    finished.append(rounds)
    return key.hex()


# --8<-- [start:thread]
@app.get("/key/thread")
async def key_in_a_thread(ctx: CancelCtx, rounds: int = 2_000_000) -> dict[str, str]:
    # A hang-up lets the endpoint go at once (abandon=True), but the thread burns on until
    # pbkdf2_hmac returns: Python cannot stop a thread, least of all one inside C code.
    return {"key": await ctx.run_sync(derive_key, rounds, abandon=True)}


# --8<-- [end:thread]


# --8<-- [start:process]
@app.get("/key/process")
async def key_in_a_process(ctx: CancelCtx, rounds: int = 2_000_000) -> dict[str, str]:
    # The worker process is killed on hang-up: the C code stops with it.
    return {"key": await ctx.run_in_process(derive_key, rounds)}


# --8<-- [end:process]
