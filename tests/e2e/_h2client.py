"""A blocking HTTP/2 client over cleartext (h2c, prior knowledge), built on the ``h2`` library.

HTTP/2 has a hang-up HTTP/1.1 lacks: ``RST_STREAM`` ends one request while the connection,
and every other stream on it, stays open. This client sends it when the test says so, and
can also close the whole connection. Frames are read only while the test waits for
something (:meth:`H2Connection.pump`); every wait is bounded in time and in ``recv()``
calls. Request bodies respect the server's flow-control windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events

from ._client import HOST, LoopbackConnection, Response

_RECV_SIZE = 65536
_MAX_RECVS = 100_000


@dataclass
class _Stream:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: int | None = None  # the error code of a RST_STREAM from the server


class H2Connection(LoopbackConnection):
    """One h2c connection to ``127.0.0.1:port``; the preface and settings go out at once."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        super().__init__(port, timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.initiate_connection()
        self._flush()
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        """Whether the server closed the socket (or it broke)."""
        self.terminated: int | None = None
        """The error code of the server's GOAWAY, if one came."""

    def send_request(
        self,
        method: str,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | Iterable[bytes] | None = None,
        end: bool = True,
    ) -> int:
        """Open a stream with a request and return its id.

        Without ``body`` the stream is half-closed at once (END_STREAM on the headers);
        with one, it is sent piece by piece as the server's windows allow, then ended.
        With ``end=False`` the request stays open for more body (:meth:`send_body`).
        """
        stream_id: int = self.h2.get_next_available_stream_id()
        self.streams[stream_id] = _Stream()
        pseudo = [
            (":method", method),
            (":path", target),
            (":scheme", "http"),
            (":authority", f"{HOST}:{self.port}"),
        ]
        fields = pseudo + [(name.lower(), value) for name, value in (headers or {}).items()]
        self.h2.send_headers(stream_id, fields, end_stream=body is None and end)
        self._flush()
        if body is not None:
            self.send_body(stream_id, [body] if isinstance(body, bytes) else body, end=end)
        return stream_id

    def send_body(self, stream_id: int, pieces: Iterable[bytes], *, end: bool = True) -> None:
        """Send ``pieces`` as DATA frames, waiting for window updates when a window is full.

        Raises:
            TimeoutError: if the server opened no window for ``timeout`` seconds.
        """
        for piece in pieces:
            offset = 0
            for _ in range(_MAX_RECVS):
                if offset >= len(piece):
                    break
                window = min(
                    self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size
                )
                if window <= 0:
                    if not self.pump(lambda: self._window(stream_id) > 0, self.timeout):
                        raise TimeoutError(f"no flow-control window within {self.timeout} s")
                    continue
                self.h2.send_data(stream_id, piece[offset : offset + window])
                offset += window
                self._flush()
        if end:
            self.h2.end_stream(stream_id)
            self._flush()

    def read_response(self, stream_id: int) -> Response:
        """Wait for the whole response on ``stream_id``.

        Raises:
            ConnectionError: if the stream was reset or the connection ended first.
            TimeoutError: if the response took longer than ``timeout``.
        """
        stream = self.streams[stream_id]
        if not self.pump(lambda: stream.ended or self._gone(stream), self.timeout):
            raise TimeoutError(f"no complete response within {self.timeout} s")
        if not stream.ended:
            raise ConnectionError(self._why_gone(stream))
        status = int(stream.headers[":status"])
        headers = {name: value for name, value in stream.headers.items() if name[0] != ":"}
        return Response(status, headers, bytes(stream.data))

    def read_until(self, stream_id: int, marker: bytes) -> bytes:
        """Wait until ``marker`` is in the body of ``stream_id``; return the body so far."""
        stream = self.streams[stream_id]
        if not self.pump(lambda: marker in stream.data or self._gone(stream), self.timeout):
            raise TimeoutError(f"no {marker!r} within {self.timeout} s")
        if marker not in stream.data:
            raise ConnectionError(self._why_gone(stream))
        return bytes(stream.data)

    def reset(self, stream_id: int) -> float:
        """Send RST_STREAM(CANCEL) for ``stream_id``; return ``time.monotonic()`` just before."""
        self.h2.reset_stream(stream_id, error_code=h2.errors.ErrorCodes.CANCEL)
        data = self.h2.data_to_send()
        reset_at = time.monotonic()
        self.sock.sendall(data)
        return reset_at

    def hang_up(self) -> float:
        """Close the whole connection (a FIN); return ``time.monotonic()`` just before."""
        closed_at = time.monotonic()
        self.sock.close()
        self.closed = True
        return closed_at

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Read and handle frames until ``until()`` is true or ``timeout`` seconds pass.

        Returns the final ``until()``. The connection's own bookkeeping (SETTINGS acks,
        window updates for the data read) goes out as it arises.
        """
        deadline = time.monotonic() + timeout
        for _ in range(_MAX_RECVS):
            if until():
                return True
            if self.closed or time.monotonic() >= deadline:
                break
            self._receive(deadline)
        return until()

    def _receive(self, deadline: float) -> None:
        self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = self.sock.recv(_RECV_SIZE)
        except TimeoutError:
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        for event in self.h2.receive_data(data):
            self._handle(event)
        try:
            self._flush()
        except OSError:  # the server went away meanwhile
            self.closed = True

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event.error_code
            return
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.headers = {str(name): str(value) for name, value in event.headers}
        elif isinstance(event, h2.events.DataReceived):
            stream.data += event.data
            # Hand the window back at once, so the server can go on sending.
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = event.error_code

    def _window(self, stream_id: int) -> int:
        window: int = self.h2.local_flow_control_window(stream_id)
        return window

    def _gone(self, stream: _Stream) -> bool:
        return self.closed or self.terminated is not None or stream.reset is not None

    def _why_gone(self, stream: _Stream) -> str:
        if stream.reset is not None:
            return f"the server reset the stream (error code {stream.reset})"
        if self.terminated is not None:
            return f"the server sent GOAWAY (error code {self.terminated})"
        return "the server closed the connection"

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            self.sock.sendall(data)
