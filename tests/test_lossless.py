"""Lossless: every request body byte reaches whoever reads it, in order, exactly once.

The guard's watcher reads the raw ``receive`` too (it must, to see the hang-up); whatever it
holds must reach the endpoint, whichever entry point made the context and however the
endpoint reads: ``request.body()``, ``.stream()``, ``.json()``, ``.form()``, a body parameter.

The client stays here, so no ``http.disconnect`` arrives before the response is complete and
the server's disconnect mode (``once``/``repeat``) cannot matter; the hang-up cases, where it
does, are in ``test_hang_up.py``.

No ``from __future__ import annotations`` here: FastAPI resolves string annotations in the
module's globals, where the apps' local names do not live.
"""

import json
import math
import os

import anyio
import anyio.lowlevel
import pytest
from fastapi import FastAPI, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from fastapi_hangup.testing import HangUpClient
from tests._context_apps import EntryPoint, app_with

pytestmark = pytest.mark.anyio

PAYLOAD = json.dumps({"rows": [f"row-{i:04d}" for i in range(300)]}).encode()


def split(data: bytes, parts: int) -> list[bytes]:
    """``data`` in ``parts`` consecutive non-empty pieces (fewer if it is shorter)."""
    size = max(1, math.ceil(len(data) / parts))
    return [data[i : i + size] for i in range(0, len(data), size)]


#: One chunk, 64 small ones, and uneven sizes with an empty message in between.
CHUNKINGS = [
    pytest.param(split(PAYLOAD, 1), id="one-chunk"),
    pytest.param(split(PAYLOAD, 64), id="64-chunks"),
    pytest.param([os.urandom(n) for n in (1, 4096, 0, 70_000, 17, 65_536, 3)], id="uneven"),
]
SETTLE = pytest.mark.parametrize("settle_first", [False, True], ids=["read-at-once", "read-later"])


async def read_body(request: Request, how: str) -> list[bytes]:
    """Read the request body the way ``how`` says; return what arrived, message by message."""
    if how == "body":
        return [await request.body()]
    if how == "json":
        return [json.dumps(await request.json()).encode()]
    return [chunk async for chunk in request.stream()]


def reading_app(entry: EntryPoint, how: str, got: list[bytes], *, settle_first: bool) -> FastAPI:
    router = entry.router()

    @router.api_route("/read", methods=["GET", "POST"])
    async def read(request: Request) -> dict[str, bool]:
        if settle_first:  # the watcher is running and holds the first message
            await anyio.wait_all_tasks_blocked()
        got.extend(await read_body(request, how))
        return {"ok": True}

    return app_with(router)


@pytest.mark.parametrize("chunks", CHUNKINGS)
@SETTLE
@pytest.mark.parametrize("how", ["body", "stream"])
async def test_guarded_endpoint_reads_every_body_byte_in_order(
    entry: EntryPoint, how: str, chunks: list[bytes], settle_first: bool
) -> None:
    got: list[bytes] = []
    app = reading_app(entry, how, got, settle_first=settle_first)

    result = await HangUpClient(app).post("/read", body=chunks)

    assert result.status_code == 200
    assert result.context is not None  # the body went through a guarded request
    if how == "stream":  # each message once, in order; Starlette skips empty ones and ends
        assert got == [chunk for chunk in chunks if chunk] + [b""]  # every stream with b""
    else:
        assert got == [b"".join(chunks)]


@SETTLE
async def test_guarded_endpoint_reads_a_json_body(entry: EntryPoint, settle_first: bool) -> None:
    got: list[bytes] = []
    app = reading_app(entry, "json", got, settle_first=settle_first)

    result = await HangUpClient(app).post("/read", body=split(PAYLOAD, 64))

    assert result.status_code == 200
    assert json.loads(b"".join(got)) == json.loads(PAYLOAD)


@pytest.mark.parametrize("how", ["body", "stream"])
@SETTLE
async def test_get_with_an_empty_body_reads_nothing_and_does_not_hang(
    entry: EntryPoint, how: str, settle_first: bool
) -> None:
    got: list[bytes] = []
    app = reading_app(entry, how, got, settle_first=settle_first)

    result = await HangUpClient(app, timeout=5).get("/read")

    assert result.status_code == 200
    assert b"".join(got) == b""


def form_app(entry: EntryPoint, fields: dict[str, str], uploads: dict[str, bytes]) -> FastAPI:
    router = entry.router()

    @router.post("/form")
    async def form(request: Request) -> dict[str, bool]:
        await anyio.wait_all_tasks_blocked()
        async with request.form() as data:
            for key, value in data.multi_items():
                if isinstance(value, str):
                    fields[key] = value
                else:
                    assert isinstance(value, UploadFile)
                    uploads[key] = await value.read()
        return {"ok": True}

    return app_with(router)


@pytest.mark.parametrize("parts", [1, 64], ids=["one-chunk", "64-chunks"])
async def test_guarded_endpoint_reads_an_urlencoded_form(entry: EntryPoint, parts: int) -> None:
    # Starlette parses even urlencoded forms with python-multipart.
    pytest.importorskip("python_multipart")
    sent = {f"field{i}": f"value {i}" for i in range(64)}
    body = "&".join(f"{k}={v.replace(' ', '+')}" for k, v in sent.items()).encode()
    fields: dict[str, str] = {}

    result = await HangUpClient(form_app(entry, fields, {})).post(
        "/form",
        body=split(body, parts),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )

    assert result.status_code == 200
    assert fields == sent


@pytest.mark.parametrize("parts", [1, 64], ids=["one-chunk", "64-chunks"])
async def test_guarded_endpoint_reads_a_multipart_form(entry: EntryPoint, parts: int) -> None:
    pytest.importorskip("python_multipart")
    boundary = "hangup-boundary"
    upload = bytes(range(256)) * 16
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n'.encode(),
            b"report\r\n",
            f"--{boundary}\r\nContent-Disposition: form-data; "
            'name="upload"; filename="data.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode(),
            upload,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    fields: dict[str, str] = {}
    uploads: dict[str, bytes] = {}

    result = await HangUpClient(form_app(entry, fields, uploads)).post(
        "/form",
        body=split(body, parts),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )

    assert result.status_code == 200
    assert fields == {"title": "report"}
    assert uploads == {"upload": upload}


class Order(BaseModel):
    item: str
    notes: list[str]


async def test_body_parameter_parses_a_multi_chunk_body(entry: EntryPoint) -> None:
    router = entry.router()

    @router.post("/orders")
    async def create(order: Order) -> Order:
        await anyio.lowlevel.checkpoint()
        return order

    order = Order(item="book", notes=[f"note {i}" for i in range(100)])
    result = await HangUpClient(app_with(router)).post(
        "/orders",
        body=split(order.model_dump_json().encode(), 64),
        headers={"content-type": "application/json"},
    )

    assert result.status_code == 200
    assert Order.model_validate_json(result.body) == order
    assert result.context is not None


async def test_is_disconnected_does_not_swallow_body_bytes(entry: EntryPoint) -> None:
    chunks = split(PAYLOAD, 64)
    answers: list[bool] = []
    got: list[bytes] = []
    router = entry.router()

    @router.post("/read")
    async def read(request: Request) -> dict[str, bool]:
        answers.append(await request.is_disconnected())  # before the watcher runs
        await anyio.wait_all_tasks_blocked()
        answers.append(await request.is_disconnected())  # while it holds the first chunk
        async for chunk in request.stream():
            got.append(chunk)
            answers.append(await request.is_disconnected())
        return {"ok": True}

    result = await HangUpClient(app_with(router)).post("/read", body=chunks)

    assert result.status_code == 200
    assert [chunk for chunk in got if chunk] == chunks
    assert not any(answers)
