"""Unary gRPC calls on one HTTP/2 connection: the transport of the timed Predict loop.

grpcio's blocking call spends about 0.15 ms of the calling thread's CPU per request on
this 2-core machine (call objects, completion-queue polling, its C core's HTTP/2), and
the client shares the CPU with the server it measures. A measured latency should be
the server's, so the hot path sends its prepared PredictRequest with this instead:
the HEADERS frame is the same bytes every call apart from the stream id, the message
goes out with one ``sendmsg`` of the frame header and the caller's buffer (no copy),
and the answer is read straight off the socket (benchmarks/bench_client_cost.py has
the figures). Everything else (metadata, status, TLS, name resolution) stays with grpcio.

What it does of HTTP/2 (RFC 9113) and gRPC over HTTP/2 (grpc/doc/PROTOCOL-HTTP2.md):
- the client preface, SETTINGS and their ACKs, PING answers; GOAWAY, RST_STREAM, an
  HTTP status other than 200 and a closed socket become gRPC status errors;
- flow control both ways: our receive windows are opened to the maximum once (and
  topped up), DATA is sent only within the peer's connection and stream windows and
  its largest frame size, reading its WINDOW_UPDATEs while waiting;
- header blocks it sends are HPACK literals that are never indexed, so they need no
  state; every block it receives (HEADERS, CONTINUATION) goes through hpack's Decoder
  in order, so the decoder's table stays in step with the server's;
- padded and prioritised frames; compressed messages are refused (none are asked for).
Where a server can break it, it follows RFC 9113 and fails the call rather than
guess: DATA beyond a receive window, a window pushed past 2^31-1, frames on streams it
never opened, more than MAX_CONTINUATIONS frames or MAX_HEADER_BLOCK bytes in a header
block, a header list over 64 KiB, malformed SETTINGS. A call has one deadline, however
the server spreads its frames. One call at a time: a lock guards the connection;
concurrent senders open one client each. A failed call closes the connection and the
next call opens a new one. A call that a kept-alive connection's server never
processed (GOAWAY below its stream, or the connection found closed before any answer,
as when the server closed it while idle) is sent once more on a new connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

from hpack.exceptions import HPACKError

from serveprof.wire.http2 import (
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    LARGEST_FRAME,
    MAX_WINDOW,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    STATUS_NAMES,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    FrameSocket,
    HeaderDecoder,
    Http2Error,
    data_frame,
    frame_header,
    grpc_message_decode,
    grpc_prefix,
    header_block,
    unpad,
)
from serveprof.wire.sockets import close_quietly

TOP_UP_AT = 1 << 30  # bytes received before the connection window is opened again
# PROTOCOL-HTTP2.md: an HTTP status without a grpc-status, as gRPC clients map it.
HTTP_TO_STATUS = {
    400: "INTERNAL",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "UNIMPLEMENTED",
    429: "UNAVAILABLE",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}
# RFC 9113 error codes on RST_STREAM / GOAWAY, as gRPC clients map them.
RST_TO_STATUS = {
    0x0: "INTERNAL",
    0x7: "UNAVAILABLE",
    0x8: "CANCELLED",
    0xB: "RESOURCE_EXHAUSTED",
    0xC: "PERMISSION_DENIED",
}


class GrpcCallError(Exception):
    """A call that ended without grpc-status 0: ``code`` is the status name, ``details`` the server's message."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class _Unprocessed(GrpcCallError):
    """The server did not process the call (RFC 9113 §6.8, or a closed idle connection): it may be sent again."""


def grpc_timeout_header(timeout_s: float) -> bytes:
    """The grpc-timeout value: at most 8 digits and a unit (PROTOCOL-HTTP2.md)."""
    for unit, per_second in ((b"m", 1_000), (b"S", 1), (b"M", 1 / 60), (b"H", 1 / 3600)):
        amount = max(1, int(timeout_s * per_second + 0.999999))
        if amount < 100_000_000:
            return str(amount).encode() + unit
    return b"99999999H"


def parse_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; ValueError for anything else (e.g. ``dns:///x`` or ``unix:``)."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host or "/" in host:
        raise ValueError(f"{target!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{target!r}: an IPv6 address must be in brackets, [addr]:port")
    return host, int(port)


class UnaryChannel:
    """One HTTP/2 connection to ``host:port`` that makes unary gRPC calls, one at a time."""

    def __init__(self, target: str, timeout_s: float | None = None, user_agent: str = "serveprof"):
        self.host, self.port = parse_target(target)
        self.timeout_s = timeout_s
        self._authority = target.encode()
        self._user_agent = user_agent.encode()
        self._blocks: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    # ----------------------------------------------------------------- connection

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            settings = struct.pack(
                ">HIHIHI",
                SETTINGS_ENABLE_PUSH,
                0,
                SETTINGS_INITIAL_WINDOW_SIZE,
                MAX_WINDOW,
                SETTINGS_MAX_FRAME_SIZE,
                LARGEST_FRAME,
            )
            sock.sendall(
                PREFACE
                + frame_header(len(settings), SETTINGS, 0, 0)
                + settings
                + frame_header(4, WINDOW_UPDATE, 0, 0)
                + struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)
            )
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._frames = FrameSocket(sock)
        self._decoder = HeaderDecoder()
        self._next_stream = 1
        self._peer_max_frame = DEFAULT_MAX_FRAME
        self._peer_initial_window = DEFAULT_WINDOW
        self._send_window = DEFAULT_WINDOW  # the connection's
        self._stream_window = 0  # the current stream's
        self._received = 0  # DATA bytes since our connection window was last topped up
        self._recv_window = MAX_WINDOW  # the connection's, as the server sees it
        self._goaway_last_stream: int | None = None
        self._calls = 0  # calls answered on this connection
        self._deadline = float("inf")

    def connect(self) -> None:
        """Open the connection and finish the SETTINGS exchange, if not done yet.

        The measurement calls this before its first timed request (through
        ``GrpcClient.prepare``), so "first init" times the request, not a TCP connect.
        """
        with self._lock, self._failures_as_status():
            if self._sock is None:
                self._connect()
                self._settings_received = False
                if self.timeout_s is not None:
                    self._deadline = time.monotonic() + self.timeout_s
                while not self._settings_received:
                    self._read_frame(_Reply(-1))

    def close(self) -> None:
        sock, self._sock = self._sock, None
        close_quietly(sock)

    def __enter__(self) -> UnaryChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------- calling

    def call(self, path: str, message) -> bytes:
        """Send ``message`` (bytes-like, one serialized request) to method ``path``; return the response message."""
        view = memoryview(message).cast("B")
        with self._lock, self._failures_as_status():
            if self._sock is not None and self._goaway_last_stream is not None:
                self.close()  # the server said it takes no new streams here
            if self._sock is None:
                self._connect()
            try:
                return self._call(path, view)
            except _Unprocessed:
                self.close()
                self._connect()
                return self._call(path, view)

    @contextlib.contextmanager
    def _failures_as_status(self):
        """Every failure as a gRPC status; after any but the server's own answer the connection is closed."""
        try:
            yield
        except GrpcCallError as error:
            if error.code in ("UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED", "CANCELLED"):
                self.close()  # the connection's state is not known any more
            raise
        except TimeoutError:
            self.close()
            raise GrpcCallError(
                "DEADLINE_EXCEEDED", f"no answer from {self.host}:{self.port} within {self.timeout_s} s"
            ) from None
        except (OSError, EOFError) as error:
            self.close()
            raise GrpcCallError(
                "UNAVAILABLE", f"connection to {self.host}:{self.port} failed: {type(error).__name__}: {error}"
            ) from None
        except HPACKError as error:
            self.close()
            raise GrpcCallError("INTERNAL", f"undecodable header block from the server: {error}") from None
        except Http2Error as error:
            self.close()
            raise GrpcCallError("INTERNAL", f"the server broke HTTP/2: {error}") from None

    def _header_block(self, path: str) -> bytes:
        block = self._blocks.get(path)
        if block is None:
            fields = [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", path.encode()),
                (b":authority", self._authority),
                (b"content-type", b"application/grpc"),
                (b"te", b"trailers"),
                (b"user-agent", self._user_agent),
            ]
            if self.timeout_s is not None:
                fields.append((b"grpc-timeout", grpc_timeout_header(self.timeout_s)))
            block = self._blocks[path] = header_block(fields)
        return block

    def _call(self, path: str, message: memoryview) -> bytes:
        reused = self._calls > 0
        self._deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else float("inf")
        reply = _Reply(self._next_stream)
        try:
            answer = self._exchange(path, message, reply)
        except (EOFError, ConnectionResetError, BrokenPipeError) as error:
            if reused and not reply.started:
                raise _Unprocessed("UNAVAILABLE", f"the kept-alive connection was closed: {error}") from None
            raise
        self._calls += 1
        return answer

    def _exchange(self, path: str, message: memoryview, reply: _Reply) -> bytes:
        stream = self._next_stream
        if stream > MAX_WINDOW:
            raise EOFError("stream ids used up")
        self._next_stream += 2
        self._stream_window = self._peer_initial_window
        block = self._header_block(path)
        if len(block) > self._peer_max_frame:
            raise GrpcCallError("INTERNAL", "request headers larger than the server's frame size")
        prefix = grpc_prefix(len(message))
        head = frame_header(len(block), HEADERS, FLAG_END_HEADERS, stream) + block
        total = 5 + len(message)
        sent = 0
        pending = [head]
        while sent < total and not reply.ended:
            allowed = min(total - sent, self._send_window, self._stream_window, self._peer_max_frame)
            if allowed <= 0:
                self._send(pending)
                pending = []
                self._read_frame(reply)  # until a WINDOW_UPDATE (or the answer) comes
                continue
            last = sent + allowed == total
            pending += data_frame(stream, prefix, message, sent, allowed, FLAG_END_STREAM if last else 0)
            sent += allowed
            self._send_window -= allowed
            self._stream_window -= allowed
        self._send(pending)
        while not reply.ended:
            self._read_frame(reply)
        return reply.result()

    def _send(self, buffers: list) -> None:
        self._frames.send(buffers)

    # ------------------------------------------------------------------- reading

    def _read_frame(self, reply: _Reply) -> None:
        if time.monotonic() > self._deadline:
            raise TimeoutError("the call's deadline passed")
        kind, flags, stream, payload = self._frames.read_frame()
        if stream and (stream >= self._next_stream and stream != reply.stream or stream % 2 == 0):
            if kind not in (PUSH_PROMISE, 2):  # PRIORITY may name any stream
                raise Http2Error(PROTOCOL_ERROR, f"a frame of type {kind} on stream {stream}, which was never opened")
        if kind == DATA:
            if stream == 0:
                raise Http2Error(PROTOCOL_ERROR, "DATA on stream 0")
            if len(payload) > self._recv_window:
                raise Http2Error(FLOW_CONTROL_ERROR, "DATA beyond the connection's window")
            self._recv_window -= len(payload)
            self._received += len(payload)
            if self._received >= TOP_UP_AT:
                self._send([frame_header(4, WINDOW_UPDATE, 0, 0), struct.pack(">I", self._received)])
                self._recv_window += self._received
                self._received = 0
            if stream == reply.stream and not reply.ended:
                reply.started = True
                reply.data.append(unpad(payload, flags))
                if flags & FLAG_END_STREAM:
                    reply.end()
            else:  # a stream that has ended (RFC 9113 §6.1)
                self._send([frame_header(4, RST_STREAM, 0, stream), struct.pack(">I", STREAM_CLOSED)])
        elif kind == HEADERS:
            block = self._frames.read_header_block(flags, stream, payload)
            headers = self._decoder.decode(block)  # every block, in order, for the HPACK table
            if stream == reply.stream and not reply.ended:
                reply.started = True
                reply.headers(headers, bool(flags & FLAG_END_STREAM))
        elif kind == SETTINGS:
            if stream != 0:
                raise Http2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & FLAG_ACK:
                self._apply_settings(payload)
                self._send([frame_header(0, SETTINGS, FLAG_ACK, 0)])
                self._settings_received = True
        elif kind == WINDOW_UPDATE:
            if len(payload) != 4:
                raise Http2Error(FRAME_SIZE_ERROR, "a WINDOW_UPDATE must carry 4 bytes")
            increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
            if increment == 0:
                raise Http2Error(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            if stream == 0:
                self._send_window += increment
                if self._send_window > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR, "a WINDOW_UPDATE pushes the connection's window past 2^31-1")
            elif stream == reply.stream:
                self._stream_window += increment
                if self._stream_window > MAX_WINDOW:
                    raise GrpcCallError("INTERNAL", "the server pushed the stream's window past 2^31-1")
        elif kind == PING:
            if len(payload) != 8 or stream != 0:
                raise Http2Error(FRAME_SIZE_ERROR, "a PING must carry 8 bytes on stream 0")
            if not flags & FLAG_ACK:
                self._send([frame_header(8, PING, FLAG_ACK, 0), payload])
        elif kind == RST_STREAM:
            if stream == 0:
                raise Http2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if stream == reply.stream:
                code = int.from_bytes(payload[:4], "big")
                raise GrpcCallError(
                    RST_TO_STATUS.get(code, "INTERNAL"), f"the server reset the stream (HTTP/2 error {code})"
                )
        elif kind == GOAWAY:
            self._goaway_last_stream = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if self._goaway_last_stream < reply.stream:
                code = int.from_bytes(payload[4:8], "big")
                detail = payload[8:].decode("utf-8", "replace")
                text = f"the server is going away (HTTP/2 error {code}{': ' + detail if detail else ''})"
                raise (_Unprocessed if self._calls else GrpcCallError)("UNAVAILABLE", text)
        elif kind == PUSH_PROMISE:
            raise GrpcCallError("INTERNAL", "the server pushed, though push is disabled")
        elif kind == CONTINUATION:
            raise Http2Error(PROTOCOL_ERROR, "CONTINUATION without a header block in progress")
        # PRIORITY and unknown frame types are ignored, as RFC 9113 asks.

    def _apply_settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise Http2Error(FRAME_SIZE_ERROR, "a SETTINGS payload must be a multiple of 6 bytes")
        for key, value in struct.iter_unpack(">HI", payload):
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR, "initial window size over 2^31-1")
                self._stream_window += value - self._peer_initial_window
                self._peer_initial_window = value
                if self._stream_window > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR, "a SETTINGS change pushes the stream's window past 2^31-1")
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= LARGEST_FRAME:
                    raise Http2Error(PROTOCOL_ERROR, f"max frame size {value} out of range")
                self._peer_max_frame = value


class _Reply:
    """What arrives on one stream: response headers, DATA, trailers."""

    def __init__(self, stream: int):
        self.stream = stream
        self.data: list[bytes] = []
        self.http_status: str | None = None
        self.trailers: dict[str, str] | None = None
        self.ended = False
        self.started = False  # a frame of the answer has come

    def headers(self, fields, end_stream: bool) -> None:
        values = dict(fields)
        if self.http_status is None:
            self.http_status = values.get(":status", "")
            if end_stream:  # a trailers-only answer: status and grpc-status in one block
                self.trailers = values
        else:
            self.trailers = values
        if end_stream:
            self.end()

    def end(self) -> None:
        self.ended = True

    def result(self) -> bytes:
        trailers = self.trailers or {}
        status = trailers.get("grpc-status")
        if status is None:
            if self.http_status != "200":
                code = HTTP_TO_STATUS.get(int(self.http_status or 0), "UNKNOWN")
                raise GrpcCallError(code, f"the server answered HTTP status {self.http_status}")
            raise GrpcCallError("INTERNAL", "the server ended the stream without a grpc-status")
        number = int(status) if status.isdigit() else 2
        if number != 0:
            name = STATUS_NAMES[number] if number < len(STATUS_NAMES) else "UNKNOWN"
            raise GrpcCallError(name, grpc_message_decode(trailers.get("grpc-message", "")))
        data = b"".join(self.data)
        if len(data) < 5:
            raise GrpcCallError("INTERNAL", "the server sent status OK without a response message")
        if data[0] != 0:
            raise GrpcCallError("INTERNAL", "the server sent a compressed message, which was not asked for")
        length = int.from_bytes(data[1:5], "big")
        if len(data) != 5 + length:
            raise GrpcCallError("INTERNAL", f"the response message should have {length} bytes but has {len(data) - 5}")
        return data[5:]
