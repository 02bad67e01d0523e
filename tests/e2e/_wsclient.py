"""Websocket clients for the real-server tests: the ``websockets`` library's sync client, and
a raw socket that shakes hands and then falls silent (it never answers a ping)."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import struct
from collections.abc import Iterator

from websockets.sync.client import ClientConnection, connect

from ._servers import HOST


@contextlib.contextmanager
def open_session(port: int, rid: str) -> Iterator[ClientConnection]:
    """A websocket to ``/ws?rid=...`` while the block runs; the request id also goes as
    ``x-request-id`` (the ``on_stop`` hook records it). The client sends no pings of its own.
    Leaving the block closes it with 1000, if the test did not close or drop it."""
    with connect(
        f"ws://{HOST}:{port}/ws?rid={rid}",
        additional_headers={"x-request-id": rid},
        open_timeout=5,
        close_timeout=2,
        ping_interval=None,
    ) as connection:
        yield connection


def drop(connection: ClientConnection) -> None:
    """Close the TCP connection without a close frame (a lost network, a killed tab)."""
    connection.socket.shutdown(socket.SHUT_RDWR)
    connection.socket.close()


def silent_session(port: int, rid: str, first: str) -> socket.socket:
    """Shake hands over a raw socket, send ``first``, and return the socket, which from then on
    reads and answers nothing: the client has gone silent (a laptop lid closed)."""
    sock = socket.create_connection((HOST, port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?rid={rid} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"x-request-id: {rid}\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    for _ in range(100):  # the handshake's answer, a few hundred bytes
        if b"\r\n\r\n" in head:
            break
        chunk = sock.recv(1024)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sock.close()
        raise AssertionError(f"no websocket handshake: {head!r}")
    sock.sendall(_text_frame(first))
    return sock


def _text_frame(text: str) -> bytes:
    # A client's frame must be masked (RFC 6455, 5.3). Short texts only.
    data = text.encode()
    assert len(data) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + mask + masked
