"""Stop a FastAPI request's work the moment its client hangs up."""

from fastapi_hangup._context import CancelOnDisconnect
from fastapi_hangup._dependency import CancelCtx, cancel_ctx
from fastapi_hangup._exceptions import ClientDisconnected

__all__ = [
    "CancelCtx",
    "CancelOnDisconnect",
    "ClientDisconnected",
    "cancel_ctx",
]
