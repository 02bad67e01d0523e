"""The public surface: what ``import fastapi_hangup`` offers, pinned so a change is deliberate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args, get_origin

from fastapi import Depends, params

import fastapi_hangup
from fastapi_hangup import CancelCtx, CancelOnDisconnect, cancel_ctx


def _isort_style(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then functions.
    kind = 0 if name.isupper() else 1 if name[0].isupper() else 2
    return kind, name


def test_all_is_the_exact_public_api() -> None:
    assert fastapi_hangup.__all__ == [
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


def test_all_is_sorted() -> None:
    assert fastapi_hangup.__all__ == sorted(fastapi_hangup.__all__, key=_isort_style)


def test_every_name_in_all_is_importable() -> None:
    for name in fastapi_hangup.__all__:
        assert getattr(fastapi_hangup, name) is not None, name


def test_cancel_ctx_alias_is_annotated_context_with_depends_on_cancel_ctx() -> None:
    assert get_origin(CancelCtx) is Annotated
    context_type, *metadata = get_args(CancelCtx)
    assert context_type is CancelOnDisconnect
    # params.Depends is a dataclass: equal fields mean the same dependency declaration.
    assert metadata == [Depends(cancel_ctx)]
    assert isinstance(metadata[0], params.Depends)


def test_package_ships_py_typed() -> None:
    assert (Path(fastapi_hangup.__file__).parent / "py.typed").is_file()


def test_context_offers_handlers_only_what_they_call() -> None:
    public = sorted(name for name in dir(CancelOnDisconnect) if not name.startswith("_"))
    assert public == [
        "cause",
        "check",
        "deadline",
        "is_cancelled",
        "on_cancel",
        "remaining",
        "run_in_process",
        "run_sync",
        "scope",
        "shield",
        "work",
    ]
