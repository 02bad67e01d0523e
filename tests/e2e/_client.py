"""A raw-socket HTTP/1.1 client that can hang up the way real clients do.

httpx and friends hide how a connection ends. Here the test decides: read a whole response
(Content-Length, chunked, or until close), keep the connection for the next request, or hang
up mid-request with a FIN (``close()``) or a RST (``SO_LINGER`` 0, then ``close()``).
Every read is bounded in time and in the number of ``recv()`` calls.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

HOST = "127.0.0.1"
HangUp = Literal["fin", "rst"]

_RECV_SIZE = 65536
_MAX_RECVS = 100_000  # ~6 GB at 64 KiB a call: more than any test reads
_MAX_HEAD = 65536


@dataclass(frozen=True)
class Response:
    """One HTTP response as it came over the wire."""

    status: int
    headers: dict[str, str]
    """Header names lower-cased; the last value of a repeated header wins."""
    body: bytes

    def json(self) -> Any:
        """The body, decoded as JSON."""
        return json.loads(self.body)


class LoopbackConnection:
    """One TCP connection to ``127.0.0.1:port`` (Nagle off), closed at the end of a ``with``.

    Args:
        port: the server's port.
        timeout: the longest any single send or read may take, in seconds.
    """

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()


class Connection(LoopbackConnection):
    """An HTTP/1.1 connection, read through a buffer that keeps leftovers."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        super().__init__(port, timeout)
        self._buffer = b""

    def send_request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        chunked: bool = False,
    ) -> None:
        """Send a request: ``body`` in one piece (Content-Length) or chunk by chunk.

        With ``chunked=True`` every item of ``body`` goes out as one chunk of a
        ``Transfer-Encoding: chunked`` body. Without it, an iterable ``body`` needs a
        ``Content-Length`` in ``headers`` and is sent as it is produced.
        """
        all_headers = {"Host": f"{HOST}:{self.port}", **(headers or {})}
        if chunked:
            all_headers["Transfer-Encoding"] = "chunked"
        elif isinstance(body, bytes):
            all_headers["Content-Length"] = str(len(body))
        head = f"{method} {target} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in all_headers.items())
        self.sock.sendall(head.encode("latin-1") + b"\r\n")
        pieces = [body] if isinstance(body, bytes) else body or []
        try:
            for piece in pieces:
                if chunked and piece:
                    self.sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                elif not chunked:
                    self.sock.sendall(piece)
            if chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError as exc:  # timeout included: the server stopped reading the body
            raise ConnectionError(
                f"the server stopped reading the request body ({exc!r}); "
                f"what it sent meanwhile: {self._whatever_arrived()!r}"
            ) from exc

    def read_response(self) -> Response:
        """Read one whole response; leftover bytes stay for the next one.

        Raises:
            ConnectionError: if the server closed the connection before the response ended.
            TimeoutError: if the response took longer than ``timeout``.
        """
        deadline = time.monotonic() + self.timeout
        head = self._read_until(b"\r\n\r\n", deadline, _MAX_HEAD)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked(deadline)
        elif "content-length" in headers:
            body = self._read_exactly(int(headers["content-length"]), deadline)
        else:
            body = self._read_to_close(deadline)
        return Response(status, headers, body)

    def read_until(self, marker: bytes) -> bytes:
        """Read up to the first ``marker`` and return what came before it (``marker`` is consumed).

        For a response still streaming: read its head and first lines without waiting for
        the end.
        """
        return self._read_until(marker, time.monotonic() + self.timeout, _MAX_RECVS * _RECV_SIZE)

    def hang_up(self, how: HangUp = "fin") -> float:
        """Close the connection with a FIN or a RST; return ``time.monotonic()`` just before."""
        if how == "rst":
            # SO_LINGER on with a zero timeout: close() drops the connection with a RST.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        closed_at = time.monotonic()
        self.sock.close()
        return closed_at

    def _whatever_arrived(self) -> bytes:
        # For error messages only: an early answer (a 413, a 500) explains a stalled upload.
        try:
            self.sock.settimeout(0.5)
            return self._buffer + self.sock.recv(_RECV_SIZE)
        except OSError:
            return self._buffer

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete response within {self.timeout} s")
        self.sock.settimeout(remaining)
        return self.sock.recv(_RECV_SIZE)

    def _read_until(self, marker: bytes, deadline: float, limit: int) -> bytes:
        for _ in range(_MAX_RECVS):
            found = self._buffer.find(marker)
            if found >= 0:
                data, self._buffer = self._buffer[:found], self._buffer[found + len(marker) :]
                return data
            if len(self._buffer) > limit:
                raise ConnectionError(f"no {marker!r} in the first {limit} bytes")
            self._fill(deadline)
        raise ConnectionError("too many recv() calls")

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        for _ in range(_MAX_RECVS):
            if len(self._buffer) >= size:
                data, self._buffer = self._buffer[:size], self._buffer[size:]
                return data
            self._fill(deadline)
        raise ConnectionError("too many recv() calls")

    def _read_chunked(self, deadline: float) -> bytes:
        chunks = []
        for _ in range(_MAX_RECVS):
            size_line = self._read_until(b"\r\n", deadline, _MAX_HEAD)
            size = int(size_line.split(b";", 1)[0], 16)
            if size == 0:
                break
            chunks.append(self._read_exactly(size, deadline))
            self._read_exactly(2, deadline)  # the CRLF after the chunk data
        for _ in range(_MAX_RECVS):  # trailer fields, up to the empty line
            if not self._read_until(b"\r\n", deadline, _MAX_HEAD):
                break
        return b"".join(chunks)

    def _read_to_close(self, deadline: float) -> bytes:
        for _ in range(_MAX_RECVS):
            chunk = self._recv(deadline)
            if not chunk:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer, b""
        return data

    def _fill(self, deadline: float) -> None:
        chunk = self._recv(deadline)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self._buffer += chunk


def send_and_hang_up(port: int, request: bytes, delay: float, how: HangUp = "fin") -> float:
    """Send raw ``request`` bytes, wait ``delay`` seconds, hang up; return the hang-up time."""
    with Connection(port) as connection:
        connection.sock.sendall(request)
        time.sleep(delay)
        return connection.hang_up(how)


def get(port: int, target: str, timeout: float = 10.0) -> Response:
    """One GET on a fresh connection that is closed afterwards."""
    with Connection(port, timeout) as connection:
        connection.send_request("GET", target, headers={"Connection": "close"})
        return connection.read_response()
