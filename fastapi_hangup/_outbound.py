"""``forward_deadline``: an httpx event hook that sends what is left of the budget downstream.

It finds the budget without being handed the context: every entry point runs the work in
the guard's cancel scope, whose deadline is the budget's end, and anyio tells any code in
that task the earliest deadline of the scopes around it (``current_effective_deadline``).
So nothing is added to a request's hot path, a ``with anyio.fail_after(...)`` around the call
narrows what is sent, and code in ``ctx.shield()`` (which outlives the budget) sends none.
httpx is never imported: the hook only touches ``request.headers`` and
``request.extensions``.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING

import anyio

from fastapi_hangup._options import _MILLISECONDS, _TOKEN, DEFAULT_DEADLINE_HEADER

if TYPE_CHECKING:
    import httpx

_NOT_IN_A_TASK = (
    "{hook!r} ran outside an async task: it is a request hook for httpx.AsyncClient, and "
    "reads the budget of the task that sends the request. With a sync httpx.Client (a sync "
    "endpoint), pass the budget yourself: `timeout=ctx.remaining()` and the header "
    "`{header}: <milliseconds>`."
)


class _Done:
    """What the hook returns: httpx's AsyncClient awaits every hook, and this is ready at once.

    The hook does its work synchronously, so a sync ``httpx.Client`` (which calls hooks without
    awaiting them) gets the error in ``__call__`` instead of a coroutine that never runs.
    """

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover  (makes this a generator; never reached)


_DONE = _Done()
#: Milliseconds taken off what is sent: uvloop's clock counts whole milliseconds and is read
#: once per loop iteration, so "time left" by it may be up to about 1 ms too generous.
_CLOCK_SLACK_MS = 1
#: httpx's four timeouts; ``None`` is no limit (what a request without ``timeout`` has).
_NO_TIMEOUTS: dict[str, float | None] = {"connect": None, "read": None, "write": None, "pool": None}


class ForwardDeadline:
    """An httpx request hook that passes the request's remaining time budget downstream.

    Give it to the client once, and every request the client sends from a guarded
    endpoint carries the budget, however the endpoint is guarded (``cancel_ctx``,
    ``@cancellable``, ``CancellableRoute``, ``add_cancellation``)::

        client = httpx.AsyncClient(event_hooks={"request": [forward_deadline]})

    For each request sent while a budget runs (the route's ``deadline``, shortened by the
    caller's deadline header, or by an ``anyio.fail_after`` around the call), the hook

    - sets the deadline header (``x-envoy-expected-rq-timeout-ms: <milliseconds left>``,
      rounded down, less 1 ms for the event loop clock's resolution, at least 1), the
      header a downstream fastapi-hangup service reads with ``deadline_header=True``: so a
      chain of services shares one budget. A value already set on the request is kept if
      it is shorter;
    - lowers each of the request's timeouts (connect, read, write, pool) to the time left.

    Without a budget, inside ``ctx.shield()``, and once the budget is spent (cleanup code
    after the cancellation) it changes nothing. A hang-up needs no
    hook: it cancels the ``await`` of the call, and httpx closes the connection, so the
    downstream service sees its own client hang up and, if it runs fastapi-hangup, stops.

    Args:
        header: the header to send, in the inbound header's format (whole milliseconds).

    Raises:
        ValueError: ``header`` is not a valid HTTP header name.
    """

    __slots__ = ("_header",)

    def __init__(self, header: str = DEFAULT_DEADLINE_HEADER) -> None:
        if not isinstance(header, str) or not _TOKEN.fullmatch(header):
            raise ValueError(f"header {header!r} is not a valid HTTP header name")
        self._header = header.lower()

    def __repr__(self) -> str:
        return f"ForwardDeadline(header={self._header!r})"

    def __call__(self, request: httpx.Request) -> _Done:
        """Set the header and the timeouts of ``request`` from the current task's budget.

        Raises:
            RuntimeError: called outside an async task (by a sync ``httpx.Client``).
        """
        try:
            remaining = anyio.current_effective_deadline() - anyio.current_time()
        except anyio.NoEventLoopError:
            message = _NOT_IN_A_TASK.format(hook=self, header=self._header)
            raise RuntimeError(message) from None
        if not 0 < remaining < math.inf:
            # No budget, or a shield around the call; or the budget is spent, and the
            # cancellation is on its way (the call is cancelled at its first await) or was
            # delivered already: cleanup code's calls (asyncio lets it await) are its own.
            return _DONE
        self._set_header(request, max(1, math.floor(remaining * 1000) - _CLOCK_SLACK_MS))
        timeouts = {**_NO_TIMEOUTS, **(request.extensions.get("timeout") or {})}
        request.extensions["timeout"] = {
            key: remaining if value is None else min(value, remaining)
            for key, value in timeouts.items()
        }
        return _DONE

    def _set_header(self, request: httpx.Request, milliseconds: int) -> None:
        current = request.headers.get(self._header)
        if current is not None:
            value = current.strip().encode("latin-1", "replace")
            if _MILLISECONDS.fullmatch(value) and 0 < int(value) < milliseconds:
                return  # the caller asked for less
        request.headers[self._header] = str(milliseconds)


forward_deadline = ForwardDeadline()
"""The [`ForwardDeadline`][fastapi_hangup.ForwardDeadline] hook for the default header.

It sends ``x-envoy-expected-rq-timeout-ms``, which ``deadline_header=True`` reads::

    httpx.AsyncClient(event_hooks={"request": [forward_deadline]})
"""
