"""A streaming chat over a websocket: closing the tab stops the generation within milliseconds.

Run it with ``uvicorn examples.websocket_chat:app`` and open ``/`` in a browser; close the tab
while an answer streams and the log shows the generation stopped.
"""

from collections.abc import AsyncIterator

import anyio
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from fastapi_hangup import CancelCtx, WorkScope

app = FastAPI()
TOKEN_DELAY = 0.05  # seconds per token of the stand-in model
ANSWER_WORDS = 200
generations: list[str] = []  # how each generation ended: "done" or "stopped"


async def generate(prompt: str) -> AsyncIterator[str]:
    """Stands in for an LLM client's token stream (OpenAI, Anthropic, vLLM...)."""
    for i in range(ANSWER_WORDS):
        await anyio.sleep(TOKEN_DELAY)  # the model computes, paid by the token
        yield f"{prompt}-{i} "


# --8<-- [start:chat]
@app.websocket("/chat")
async def chat(websocket: WebSocket, ctx: CancelCtx) -> None:
    await websocket.accept()
    try:
        while True:
            prompt = await websocket.receive_text()  # waiting here, a close is the normal end
            with ctx.work() as generation:  # one unit of work: a close stops just this
                async for token in generate(prompt):
                    await websocket.send_text(token)
                await websocket.send_text("[done]")
            generations.append("stopped" if generation.cancelled else "done")
    except WebSocketDisconnect:
        pass  # the tab is gone: the session ends


# --8<-- [end:chat]


# --8<-- [start:stop]
@app.websocket("/chat-with-stop")
async def chat_with_stop(websocket: WebSocket, ctx: CancelCtx) -> None:
    await websocket.accept()
    current: WorkScope | None = None

    async def answer(prompt: str) -> None:
        nonlocal current
        with ctx.work() as current:
            async for token in generate(prompt):
                await websocket.send_text(token)
        generations.append("stopped" if current.cancelled else "done")
        if not ctx.is_cancelled:  # the user pressed stop: the tab is still there
            await websocket.send_text("[stopped]" if current.cancelled else "[done]")

    async with anyio.create_task_group() as tg:
        async for message in websocket.iter_text():  # ends when the tab closes
            if message == "stop":
                if current is not None:
                    current.cancel()  # stops this generation; the session goes on
            else:
                tg.start_soon(answer, message)


# --8<-- [end:stop]


PAGE = """<!doctype html><title>chat</title>
<input id=q value="a poem"><button onclick="ws.send(q.value)">ask</button><pre id=out></pre>
<script>
const ws = new WebSocket(`ws://${location.host}/chat`);
ws.onmessage = (e) => { out.textContent += e.data; };
</script>"""


@app.get("/", response_class=HTMLResponse)
async def page() -> str:
    return PAGE
