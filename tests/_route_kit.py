"""Test helpers around a request's contexts and the generators its stream abandons."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator

from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_hangup import CancelOnDisconnect
from fastapi_hangup._guard import OBSERVER_KEY


class ContextCounter:
    """Wraps an app and lists the contexts its requests open (one request, one context).

    It chains to an observer already in the scope (``HangUpClient`` puts one there), so
    ``result.context`` keeps working.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.contexts: list[CancelOnDisconnect] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        observer = scope.get(OBSERVER_KEY)

        def observe(ctx: CancelOnDisconnect) -> None:
            self.contexts.append(ctx)
            if observer is not None:
                observer(ctx)

        scope[OBSERVER_KEY] = observe
        await self.app(scope, receive, send)


@contextlib.contextmanager
def abandoned_generators_tolerated() -> Iterator[None]:
    """Let trio's warning about an abandoned async generator pass, and collect them now.

    FastAPI's JSON Lines wrapper and Starlette's ``StreamingResponse`` never ``aclose()`` the
    endpoint's generator when the stream is cancelled, with or without fastapi-hangup (a
    plain router whose stream Starlette's own disconnect listener ends does the same).
    When the cancellation lands outside the generator, trio finalizes it on garbage
    collection with a ``ResourceWarning``, which ``filterwarnings = error`` would turn into
    a failure of whichever test happens to run the collection.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"Async generator .* was garbage collected before it had been exhausted",
            category=ResourceWarning,
        )
        yield
        gc.collect()
