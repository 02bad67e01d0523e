"""The peers and the recipes users copy today, as benchmark variants next to ours.

Each builder puts one ``GET /`` route on the app, as ``benchmarks._apps`` does, and calls
``answer()`` for the work. The recipes need nothing but FastAPI; fastapi-disconnect and
aiofence are imported only when their variant is built, and live in an environment of their
own (``scripts/bench`` makes it), never in the package's.

- the anyio task-group recipe: race the work against a task that reads ``receive()``;
- the polling recipe: run the work as a task and ask ``request.is_disconnected()`` every
  100 ms while it runs;
- vLLM's ``with_cancellation`` (``vllm/entrypoints/utils.py``): the handler and a
  disconnect listener as two tasks under ``asyncio.wait(FIRST_COMPLETED)``;
- fastapi-disconnect: its decorator, its (cooperative) dependency, and its middleware, as
  its README shows;
- aiofence: its ``DisconnectMiddleware`` and a fence around the work, as its README shows.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
from fastapi import FastAPI, Request
from starlette.middleware import Middleware

Answer = Callable[[], Awaitable[dict[str, bool]]]


def _task_group_recipe(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler(request: Request) -> dict[str, bool] | None:
        result = None
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await request.receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            result = await answer()
            tg.cancel_scope.cancel()
        return result


def _polling_recipe(app: FastAPI, answer: Answer) -> None:
    @app.get("/")
    async def handler(request: Request) -> dict[str, bool] | None:
        work = asyncio.ensure_future(answer())
        while not work.done():
            if await request.is_disconnected():
                work.cancel()
                return None
            await asyncio.wait([work], timeout=0.1)
        return work.result()


async def _listen_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _with_cancellation(
    handler: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    # vLLM's decorator, as vllm/entrypoints/utils.py has it (the request is a parameter).
    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        request = kwargs["raw_request"]
        handler_task = asyncio.create_task(handler(*args, **kwargs))
        cancellation_task = asyncio.create_task(_listen_for_disconnect(request))
        done, pending = await asyncio.wait(
            [handler_task, cancellation_task], return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if handler_task in done:
            return handler_task.result()
        return None

    return wrapper


def _vllm_shape(app: FastAPI, answer: Answer) -> None:
    async def handler(raw_request: Request) -> dict[str, bool]:
        return await answer()

    app.get("/")(_with_cancellation(handler))


def _disconnect_decorator(app: FastAPI, answer: Answer) -> None:
    from fastapi_disconnect import cancel_on_disconnect

    async def handler() -> dict[str, bool]:
        return await answer()

    app.get("/")(cancel_on_disconnect(handler))


def _disconnect_dependency(app: FastAPI, answer: Answer) -> None:
    from fastapi_disconnect import Disconnected

    async def handler(disconnected: asyncio.Event) -> dict[str, bool] | None:
        if disconnected.is_set():
            return None
        return await answer()

    # Annotations are strings in this module: give FastAPI the imported alias itself.
    handler.__annotations__["disconnected"] = Disconnected
    app.get("/")(handler)


def _disconnect_middleware(app: FastAPI, answer: Answer) -> None:
    from fastapi_disconnect import CancelOnDisconnectMiddleware

    app.add_middleware(CancelOnDisconnectMiddleware)

    @app.get("/")
    async def handler() -> dict[str, bool]:
        return await answer()


def _aiofence(app: FastAPI, answer: Answer) -> None:
    from aiofence import get_current_fencing
    from aiofence.contrib.starlette import DisconnectMiddleware

    app.user_middleware.insert(0, Middleware(DisconnectMiddleware))

    @app.get("/")
    async def handler() -> dict[str, bool] | None:
        result = None
        with get_current_fencing().move_on_cancel():
            result = await answer()
        return result


#: name: (builder, the module it needs, or None for a recipe).
PEERS: dict[str, tuple[Callable[[FastAPI, Answer], Any], str | None]] = {
    "task-group recipe": (_task_group_recipe, None),
    "polling recipe": (_polling_recipe, None),
    "vLLM with_cancellation": (_vllm_shape, None),
    "fastapi-disconnect decorator": (_disconnect_decorator, "fastapi_disconnect"),
    "fastapi-disconnect dependency": (_disconnect_dependency, "fastapi_disconnect"),
    "fastapi-disconnect middleware": (_disconnect_middleware, "fastapi_disconnect"),
    "aiofence": (_aiofence, "aiofence"),
}
