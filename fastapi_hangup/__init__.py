"""Stop a FastAPI request's work the moment its client hangs up."""

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._decorator import cancellable
from fastapi_hangup._dependency import CancelCtx, cancel_ctx
from fastapi_hangup._exceptions import ClientDisconnected
from fastapi_hangup._openapi import document_cancellation
from fastapi_hangup._policy import ALL_METHODS, SAFE_METHODS
from fastapi_hangup._route import CancellableRoute, cancellable_route

__all__ = [
    "ALL_METHODS",
    "SAFE_METHODS",
    "CancelCtx",
    "CancelOnDisconnect",
    "CancellableRoute",
    "ClientDisconnected",
    "cancel_ctx",
    "cancellable",
    "cancellable_route",
    "document_cancellation",
]
