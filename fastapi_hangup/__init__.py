"""Stop a FastAPI request's work the moment its client hangs up."""

from fastapi_hangup._app import add_cancellation
from fastapi_hangup._callbacks import CallbackHandle
from fastapi_hangup._cause import CancelCause
from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._decorator import cancellable
from fastapi_hangup._dependency import CancelCtx, cancel_ctx, cancel_ctx_with
from fastapi_hangup._exceptions import ClientDisconnected, DeadlineExceeded
from fastapi_hangup._openapi import document_cancellation
from fastapi_hangup._options import DEFAULT_DEADLINE_HEADER
from fastapi_hangup._outbound import ForwardDeadline, forward_deadline
from fastapi_hangup._policy import ALL_METHODS, SAFE_METHODS
from fastapi_hangup._report import OnStop, StoppedRequest
from fastapi_hangup._route import CancellableRoute, cancellable_route
from fastapi_hangup._websocket import WorkScope

__all__ = [
    "ALL_METHODS",
    "DEFAULT_DEADLINE_HEADER",
    "SAFE_METHODS",
    "CallbackHandle",
    "CancelCause",
    "CancelCtx",
    "CancelOnDisconnect",
    "CancellableRoute",
    "ClientDisconnected",
    "DeadlineExceeded",
    "ForwardDeadline",
    "OnStop",
    "StoppedRequest",
    "WorkScope",
    "add_cancellation",
    "cancel_ctx",
    "cancel_ctx_with",
    "cancellable",
    "cancellable_route",
    "document_cancellation",
    "forward_deadline",
]
