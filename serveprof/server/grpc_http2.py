"""A unary-only gRPC server on HTTP/2, for the embedded server's PredictionService and ModelService.

Why not grpcio's server: each call through it crosses threads several times (its
poller hands the call to a worker, which waits on the poller again for the request
message and for each batch it sends), which cost about 0.25 ms per call on this
2-core machine before any serving work; the embedded server must add at most 0.5 ms
to a model's own time (docs/server.md). Here a connection has one reader thread that
parses frames and hands a complete request to a worker (one hand-off, about 7 µs in
Python), and the worker writes the whole answer with one ``sendmsg``.

What it implements (RFC 9113, RFC 7541, grpc/doc/PROTOCOL-HTTP2.md), for any gRPC
client (grpcio and the official stubs, grpc-go, grpc-java, serveprof's own):
- HTTP/2 with prior knowledge (what gRPC clients speak), SETTINGS, PING, GOAWAY,
  RST_STREAM, padding, priority fields, CONTINUATION, concurrent streams;
- flow control both ways: requests may fill large windows that are topped up as they
  are consumed; answers wait for the client's windows;
- unary calls: one length-prefixed message in, one out, status in the trailers
  (grpc-status, percent-encoded grpc-message); a request larger than the limit is
  answered RESOURCE_EXHAUSTED as soon as its length prefix is read, an unknown method
  UNIMPLEMENTED, a compressed one UNIMPLEMENTED;
- a peer that breaks HTTP/2 gets GOAWAY with the error code and is disconnected.
Deadlines (grpc-timeout) are not enforced: a running TensorFlow call cannot be
interrupted, and the client's own deadline ends its wait.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from hpack.exceptions import HPACKError

from serveprof.wire.http2 import (COMPRESSION_ERROR, CONTINUATION, DATA, DEFAULT_MAX_FRAME, DEFAULT_WINDOW, FLAG_ACK,
                                  FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLOW_CONTROL_ERROR,
                                  FRAME_SIZE_ERROR, GOAWAY, HEADERS, LARGEST_FRAME, MAX_WINDOW, NO_ERROR, PING,
                                  PREFACE, PROTOCOL_ERROR, PUSH_PROMISE, REFUSED_STREAM, RST_STREAM, SETTINGS,
                                  SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS,
                                  SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE, WINDOW_UPDATE, FrameSocket,
                                  HeaderDecoder, ProtocolError, data_frame, frame, frame_header, grpc_message_encode,
                                  grpc_prefix, header_block)
from serveprof.wire.sockets import close_quietly
from serveprof.wire.status import Code, ServingError

log = logging.getLogger("serveprof.serve")

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_BYTES = 16 * 1024
MAX_CONTROL_FRAME = 64 * 1024  # any frame but DATA, and a whole header block: nothing gRPC sends is larger
SEND_TIMEOUT_S = 60  # a client that stops reading frees the worker writing to it after this
TOP_UP_AT = 1 << 30  # connection-window bytes consumed before a WINDOW_UPDATE
RESPONSE_HEADERS = b"\x88" + header_block([(b"content-type", b"application/grpc")])  # 0x88: ":status: 200"
OK_TRAILERS = header_block([(b"grpc-status", b"0")])

# A method takes the request message (a read-only-by-convention memoryview) and returns the response message's bytes;
# it raises ServingError for a status other than OK.
Method = Callable[[bytes], bytes]


def status_headers(code: int, message: str) -> bytes:
    return header_block([(b"grpc-status", str(code).encode()), (b"grpc-message", grpc_message_encode(message))])


class GrpcServer:
    """Serves ``methods`` (``{"/pkg.Service/Method": Method}``) on ``host:port`` until ``stop``."""

    def __init__(self, methods: dict[str, Method], host: str, port: int, max_workers: int, max_message_bytes: int,
                 unimplemented: Callable[[str], str] = lambda path: f"Method not found: {path}"):
        self.methods, self.unimplemented = methods, unimplemented
        self.max_message_bytes = max_message_bytes
        # A request up to 64 MiB streams in without waiting for window updates.
        self.initial_window = min(max_message_bytes + 5, 64 << 20, MAX_WINDOW)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self.port = self._listener.getsockname()[1]
        self._workers = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
        self._connections: set[_Connection] = set()
        self._lock = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._stopped = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self._listener.settimeout(0.2)  # the accept loop notices ``stop`` this often
        threading.Thread(target=self._accept_loop, name="grpc-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            connection = _Connection(self, sock, peer)
            with self._lock:
                if self._stopping:
                    close_quietly(sock)
                    break
                self._connections.add(connection)
            threading.Thread(target=connection.serve, name=f"grpc-conn-{peer[1]}", daemon=True).start()

    def stop(self, grace_s: float) -> threading.Event:
        """Refuse new calls, give the running ones ``grace_s``, then close everything; returns an Event set when done."""
        with self._lock:
            self._stopping = True
            connections = list(self._connections)
        close_quietly(self._listener)
        for connection in connections:
            connection.go_away(NO_ERROR, "server shutting down")
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=grace_s)
            connections = list(self._connections)
        for connection in connections:
            connection.close()
        self._workers.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()
        return self._stopped

    # Called by connections.
    def forget(self, connection: _Connection) -> None:
        with self._lock:
            self._connections.discard(connection)

    def run(self, connection: _Connection, stream: _Stream, method: Method, message: bytes) -> None:
        with self._lock:
            self._in_flight += 1
        try:
            self._workers.submit(self._call, connection, stream, method, message)
        except RuntimeError:  # shutting down
            self._finished()
            connection.respond_error(stream, Code.UNAVAILABLE.value, "server shutting down")

    def _call(self, connection: _Connection, stream: _Stream, method: Method, message: bytes) -> None:
        try:
            try:
                answer = method(message)
            except ServingError as error:
                connection.respond_error(stream, error.code.value, error.message)
            except Exception as error:  # noqa: BLE001 - the server must outlive any one request
                log.exception("%s failed unexpectedly", stream.path)
                connection.respond_error(stream, Code.INTERNAL.value,
                                         f"{stream.path} internal error: {type(error).__name__}: {error}")
            else:
                connection.respond(stream, answer)
        finally:
            self._finished()

    def _finished(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()


@dataclass(eq=False)
class _Stream:
    id: int
    path: str = ""
    receiving: bool = True  # the client has not ended its side
    answered: bool = False  # our END_STREAM is sent (or the answer is under way)
    reset: bool = False  # the client sent RST_STREAM
    prefix: bytearray = field(default_factory=bytearray)  # the gRPC message prefix: flag and length
    message: np.ndarray | None = None  # allocated once the prefix gives the length
    filled: int = 0
    unacknowledged: int = 0  # DATA bytes consumed since the last stream WINDOW_UPDATE
    send_window: int = DEFAULT_WINDOW


class _Connection:
    def __init__(self, server: GrpcServer, sock: socket.socket, peer):
        self.server, self.sock, self.peer = server, sock, peer
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT_S, 0))
        self.frames = FrameSocket(sock)
        self.decoder = HeaderDecoder(MAX_HEADER_LIST_BYTES)
        self.streams: dict[int, _Stream] = {}
        self.last_stream = 0
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.send_window = DEFAULT_WINDOW
        self.unacknowledged = 0
        self.closed = False
        self.going_away = False
        self.cond = threading.Condition()  # guards writing and the send windows

    # ---------------------------------------------------------------- reading

    def serve(self) -> None:
        try:
            if bytes(self.frames.read_exact(len(PREFACE))) != PREFACE:
                raise ProtocolError(PROTOCOL_ERROR, "not the HTTP/2 client preface (gRPC needs HTTP/2)")
            settings = struct.pack(">HIHIHIHI", SETTINGS_MAX_CONCURRENT_STREAMS, MAX_CONCURRENT_STREAMS,
                                   SETTINGS_INITIAL_WINDOW_SIZE, self.server.initial_window,
                                   SETTINGS_MAX_FRAME_SIZE, LARGEST_FRAME,
                                   SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST_BYTES)
            self.write([frame(SETTINGS, 0, 0, settings),
                        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW))])
            while True:
                length, kind, flags, stream_id = self.frames.read_frame_header()
                if kind == DATA:
                    self.on_data(length, flags, stream_id)  # reads the payload itself, into the message
                elif length > MAX_CONTROL_FRAME:
                    raise ProtocolError(FRAME_SIZE_ERROR, f"a frame of type {kind} with {length} bytes (at most "
                                                          f"{MAX_CONTROL_FRAME} but in DATA)")
                else:
                    self.handle(kind, flags, stream_id, self.frames.read_exact(length) if length else bytearray())
        except ProtocolError as error:
            log.info("gRPC connection from %s broke HTTP/2: %s", self.peer, error)
            self.go_away(error.code, str(error))
        except HPACKError as error:
            log.info("gRPC connection from %s sent an undecodable header block: %s", self.peer, error)
            self.go_away(COMPRESSION_ERROR, "undecodable header block")
        except (OSError, EOFError):
            pass
        finally:
            self.close()
            self.server.forget(self)

    def handle(self, kind: int, flags: int, stream_id: int, payload: bytearray) -> None:
        if kind == HEADERS:
            self.on_headers(flags, stream_id,
                            self.frames.read_header_block(flags, stream_id, payload, MAX_CONTROL_FRAME))
        elif kind == SETTINGS:
            if stream_id != 0:
                raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
            if not flags & FLAG_ACK:
                self.on_settings(payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id != 0:
                raise ProtocolError(FRAME_SIZE_ERROR, "a PING must carry 8 bytes on stream 0")
            if not flags & FLAG_ACK:
                self.write([frame(PING, FLAG_ACK, 0, bytes(payload))])
        elif kind == WINDOW_UPDATE:
            self.on_window_update(stream_id, payload)
        elif kind == RST_STREAM:
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                stream.reset = True
        elif kind == GOAWAY:
            self.going_away = True
        elif kind in (PUSH_PROMISE, CONTINUATION):
            raise ProtocolError(PROTOCOL_ERROR, f"unexpected frame type {kind} from a client")
        # PRIORITY and unknown frame types are ignored (RFC 9113 §5.5).

    def on_headers(self, flags: int, stream_id: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # every block, in order, for the HPACK table
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers after the request's DATA
            if not flags & FLAG_END_STREAM:
                raise ProtocolError(PROTOCOL_ERROR, "a second header block that does not end the stream")
            self.request_complete(stream)
            return
        if stream_id % 2 == 0 or stream_id <= self.last_stream:
            raise ProtocolError(PROTOCOL_ERROR, f"stream id {stream_id} is not a new client stream")
        self.last_stream = stream_id
        stream = _Stream(stream_id, send_window=self.peer_initial_window)
        if self.going_away or self.server.stopping or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self.write([frame(RST_STREAM, 0, stream_id, struct.pack(">I", REFUSED_STREAM))])
            return
        self.streams[stream_id] = stream
        fields = dict(headers)
        stream.path = fields.get(":path", "")
        problem = _request_problem(fields)
        if problem is not None:
            status, code, message = problem
            self.respond_error(stream, code, message, http_status=status)
        elif stream.path not in self.server.methods:
            self.respond_error(stream, Code.UNIMPLEMENTED.value, self.server.unimplemented(stream.path))
        elif flags & FLAG_END_STREAM:
            self.request_complete(stream)

    def on_data(self, length: int, flags: int, stream_id: int) -> None:
        """A DATA frame's payload goes straight from the socket into its request's buffer."""
        if stream_id == 0:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        self.unacknowledged += length
        if self.unacknowledged >= TOP_UP_AT:
            self.write([frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.unacknowledged))])
            self.unacknowledged = 0
        stream = self.streams.get(stream_id)
        frame_length, padding = length, 0
        if flags & FLAG_PADDED and length:
            padding = self.frames.read_exact(1)[0]
            length -= 1
            if padding > length:
                raise ProtocolError(PROTOCOL_ERROR, "a padded frame is shorter than its padding")
        data = length - padding
        if stream is not None and stream.receiving and not stream.answered:
            data = self.receive(stream, data)
        self.frames.skip(data + padding)  # what no request wants: flow control counted it, nothing keeps it
        if stream is None:
            return
        if flags & FLAG_END_STREAM:
            self.request_complete(stream)
        elif stream.receiving:
            stream.unacknowledged += frame_length
            if stream.unacknowledged >= self.server.initial_window // 2:
                self.write([frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.unacknowledged))])
                stream.unacknowledged = 0

    def receive(self, stream: _Stream, count: int) -> int:
        """Read up to ``count`` bytes of ``stream``'s request; return how many are left over to skip."""
        if stream.message is None:
            take = min(5 - len(stream.prefix), count)
            stream.prefix += self.frames.read_exact(take)
            count -= take
            if len(stream.prefix) < 5:
                return count
            declared = int.from_bytes(stream.prefix[1:5], "big")
            if stream.prefix[0] != 0:
                self.respond_error(stream, Code.UNIMPLEMENTED.value, "compressed requests are not supported")
                return count
            if declared > self.server.max_message_bytes:
                # gRPC's own wording; the message is never read into memory.
                self.respond_error(stream, Code.RESOURCE_EXHAUSTED.value,
                                   f"Received message larger than max ({declared} vs. {self.server.max_message_bytes})")
                return count
            # np.empty: pages are only committed as the bytes arrive.
            stream.message = np.empty(declared, np.uint8)
        take = min(count, len(stream.message) - stream.filled)
        if take:
            self.frames.read_into(memoryview(stream.message)[stream.filled:stream.filled + take])
            stream.filled += take
            count -= take
        if count:
            self.respond_error(stream, Code.INTERNAL.value, "Exception deserializing request! (more bytes than the "
                               "message's length prefix: one unary request has one message)")
        return count

    def on_settings(self, payload: bytearray) -> None:
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "a SETTINGS payload must be a multiple of 6 bytes")
        with self.cond:
            for offset in range(0, len(payload), 6):
                key, value = struct.unpack_from(">HI", payload, offset)
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    if value > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "initial window size over 2^31-1")
                    for stream in self.streams.values():
                        stream.send_window += value - self.peer_initial_window
                    self.peer_initial_window = value
                elif key == SETTINGS_MAX_FRAME_SIZE:
                    if not DEFAULT_MAX_FRAME <= value <= LARGEST_FRAME:
                        raise ProtocolError(PROTOCOL_ERROR, f"max frame size {value} out of range")
                    self.peer_max_frame = value
            self.cond.notify_all()
        self.write([frame(SETTINGS, FLAG_ACK, 0)])

    def on_window_update(self, stream_id: int, payload: bytearray) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "a WINDOW_UPDATE must carry 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if increment == 0:
            raise ProtocolError(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
        with self.cond:
            if stream_id == 0:
                self.send_window += increment
            elif stream_id in self.streams:
                self.streams[stream_id].send_window += increment
            self.cond.notify_all()

    def request_complete(self, stream: _Stream) -> None:
        stream.receiving = False
        if stream.answered:
            self.streams.pop(stream.id, None)
            return
        if stream.message is None or stream.filled != len(stream.message):
            self.respond_error(stream, Code.INTERNAL.value,
                               "Exception deserializing request! (the body is not one length-prefixed gRPC message)")
        else:
            stream.answered = True
            self.server.run(self, stream, self.server.methods[stream.path], memoryview(stream.message))
            stream.message = None

    # ---------------------------------------------------------------- writing

    def write(self, buffers) -> None:
        with self.cond:
            self._send_locked(buffers)

    def _send_locked(self, buffers) -> None:
        """Send with ``cond`` held; a connection that cannot be written to is closed."""
        if self.closed:
            return
        try:
            self.frames.send(buffers)
        except OSError as error:
            log.info("gRPC connection from %s: write failed (%s); closing it", self.peer, error)
            self.closed = True
            self.cond.notify_all()
            try:
                self.sock.shutdown(socket.SHUT_RDWR)  # the reader sees it and ends the connection
            except OSError:
                pass

    def respond(self, stream: _Stream, message: bytes) -> None:
        """HEADERS, the message in DATA frames within the client's windows, then the OK trailers."""
        prefix, view = grpc_prefix(len(message)), memoryview(message)
        with self.cond:
            if self.closed or stream.reset:
                return
            pending = [frame_header(len(RESPONSE_HEADERS), HEADERS, FLAG_END_HEADERS, stream.id), RESPONSE_HEADERS]
            total, sent = 5 + len(message), 0
            while sent < total:
                allowed = min(total - sent, self.send_window, stream.send_window, self.peer_max_frame)
                if allowed <= 0:
                    self._send_locked(pending)
                    pending = []
                    if not self.cond.wait(timeout=SEND_TIMEOUT_S) or self.closed or stream.reset:
                        if not (self.closed or stream.reset):
                            log.warning("gRPC client %s gave no flow-control window for %d s; dropping the answer",
                                        self.peer, SEND_TIMEOUT_S)
                        return
                    continue
                pending += data_frame(stream.id, prefix, view, sent, allowed)
                sent += allowed
                self.send_window -= allowed
                stream.send_window -= allowed
            pending += [frame_header(len(OK_TRAILERS), HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream.id),
                        OK_TRAILERS]
            self._send_locked(pending)
            self._finish(stream)

    def respond_error(self, stream: _Stream, code: int, message: str, http_status: int = 200) -> None:
        """A trailers-only answer: HTTP status, content type and the gRPC status in one header block."""
        stream.answered = True
        status = b"\x88" if http_status == 200 else header_block([(b":status", str(http_status).encode())])
        block = status + header_block([(b"content-type", b"application/grpc")]) + status_headers(code, message)
        with self.cond:
            if self.closed or stream.reset:
                return
            self._send_locked([frame_header(len(block), HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream.id), block])
            self._finish(stream)

    def _finish(self, stream: _Stream) -> None:
        """After our END_STREAM: a client still sending is asked to stop (RST_STREAM NO_ERROR, RFC 9113 §8.1)."""
        if stream.receiving:
            self._send_locked([frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR))])
            stream.receiving = False
        self.streams.pop(stream.id, None)

    def go_away(self, code: int, message: str) -> None:
        self.going_away = True
        self.write([frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + message.encode()[:200])])

    def close(self) -> None:
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.cond.notify_all()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv
        except OSError:
            pass
        close_quietly(self.sock)


def _request_problem(fields: dict[str, str]) -> tuple[int, int, str] | None:
    """What makes a request's headers unacceptable: (HTTP status, gRPC code, message), or None."""
    if fields.get(":method") != "POST":
        return 405, Code.UNIMPLEMENTED.value, f"gRPC needs POST, not {fields.get(':method')!r}"
    content_type = fields.get("content-type", "")
    if not content_type.startswith("application/grpc") or content_type.startswith("application/grpc-web"):
        return 415, Code.UNKNOWN.value, f"content-type {content_type!r} is not application/grpc"
    encoding = fields.get("grpc-encoding", "identity")
    if encoding != "identity":
        return 200, Code.UNIMPLEMENTED.value, f"grpc-encoding {encoding!r} is not supported (send identity)"
    return None
