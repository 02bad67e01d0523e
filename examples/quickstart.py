"""Quick start: one guarded endpoint (docs/quickstart.md includes this file)."""

from __future__ import annotations

# --8<-- [start:app]
import anyio
from fastapi import FastAPI

from fastapi_hangup import CancelCtx

app = FastAPI()


async def generate_report(rows: int) -> list[int]:
    """Stand-in for expensive work: an LLM call, a heavy SQL query, a search."""
    result = []
    for row in range(rows):
        await anyio.sleep(0.01)  # each await is a point where a hang-up can stop the work
        result.append(row * row)
    return result


@app.get("/report")
async def report(ctx: CancelCtx, rows: int = 100) -> dict[str, int]:
    squares = await generate_report(rows)  # stops here if the client hangs up
    return {"rows": len(squares), "total": sum(squares)}


# --8<-- [end:app]
