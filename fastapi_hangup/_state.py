"""``WorkState``: what a guard knows about the work it guards, and all that a context reads.

A guard (``RequestGuard``, ``WebSocketGuard``) is a ``WorkState`` and the only writer of it,
as trio's ``CancelStatus`` is of its ``CancelScope``. The handle handlers get,
[`CancelOnDisconnect`][fastapi_hangup.CancelOnDisconnect], only reads it (``check()`` also
marks a deadline it raised). So a guarded request is one object, and its context, a view of
one slot, is made only when something asks for it: the ``@cancellable`` decorator and the
route class never do unless the endpoint takes a ``ctx``.
"""

from __future__ import annotations

import threading
import time
from typing import ClassVar

import anyio
from starlette.types import Scope

from fastapi_hangup._backend import new_cancel_scope
from fastapi_hangup._callbacks import CallbackHandle
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._options import DEFAULTS, CancelOptions


class WorkState:
    """The state of one guarded piece of work (a request, a websocket session).

    Args:
        scope: the ASGI scope (its ``path`` names the work in messages).
        options: the route's settings (``callback_timeout`` is read by ``ctx.on_cancel``).
        cancel_scope: the cancel scope the work runs in.
    """

    __slots__ = (
        "_ctx",
        "asgi_scope",
        "budget",
        "callbacks",
        "cancel_scope",
        "cause",
        "deadline",
        "deadline_raised",
        "finished",
        "hung_up_at",
        "loop_thread",
        "options",
        "started_at",
        "working",
    )

    #: The class of the context handed out (the websocket guard's has ``work()``).
    context_class: ClassVar[type[CancelOnDisconnect]] = CancelOnDisconnect
    #: Whether this is the state of nothing at all (see ``inert_context``).
    inert: ClassVar[bool] = False

    def __init__(
        self, scope: Scope, options: CancelOptions, cancel_scope: anyio.CancelScope
    ) -> None:
        self.asgi_scope = scope
        self.options = options
        self.cancel_scope = cancel_scope
        self._ctx: CancelOnDisconnect | None = None
        self.cause: CancelCause | None = None  # why the work was cancelled
        self.working = True  # until the work is over: a hang-up then means nothing
        self.finished = False  # the guard has been left; its cancel scope is closed
        self.callbacks: list[CallbackHandle] | None = None  # ctx.on_cancel's
        self.budget: float | None = None  # the time budget, in seconds
        self.deadline: float | None = None  # when it runs out, on time.monotonic()'s clock
        self.deadline_raised = False  # ctx.check() raised DeadlineExceeded
        self.loop_thread = threading.get_ident()
        self.started_at = time.monotonic()
        self.hung_up_at: float | None = None  # when the client left, if it did

    @property
    def ctx(self) -> CancelOnDisconnect:
        """The context handlers get: made on first use, the same object while the work runs."""
        ctx = self._ctx
        if ctx is None:
            ctx = self._ctx = self.context_class(self)
        return ctx

    def finish(self) -> None:
        """The guard is left: the context reads as finished.

        It lets go of the context too, which refers back to it: so a request that ends
        normally is freed by reference counting, not by the cyclic garbage collector.
        (``RequestGuard.leave`` does the same inline.)
        """
        self.finished = True
        self._ctx = None


class _Inert(WorkState):
    __slots__ = ()
    inert = True


def inert_context(scope: Scope) -> CancelOnDisconnect:
    """A context that guards nothing: never cancelled, and its scope is refused with advice.

    For routes a ``Depends(cancel_ctx)`` does not guard: a websocket route that did not ask,
    the files of ``app.frontend()``, a method ``@cancellable(methods=...)`` leaves out.
    """
    state = _Inert(scope, DEFAULTS, new_cancel_scope())
    state.working = False
    return state.ctx
