"""A unary-only gRPC server on HTTP/2, for the embedded server's PredictionService and ModelService.

Why not grpcio's server, or the ``h2`` library: measured in docs/server.md ("The gRPC
transport"), each costs 0.1 to 0.2 ms more per call than this one, and the embedded
server may add at most 0.3 ms to a model's own time. Here the API's ``EventLoop``
thread reads every connection and parses its frames, hands a complete request to the
``WorkerPool`` (one hand-off), and the worker writes the whole answer with one
``sendmsg`` when the socket and the client's windows allow; otherwise the connection
keeps the rest and the loop sends it as the client opens its windows, so no worker
ever waits for a client.

What it implements (RFC 9113, RFC 7541, grpc/doc/PROTOCOL-HTTP2.md), for any gRPC
client (grpcio and the official stubs, grpc-go, grpc-java, serveprof's own):
- HTTP/2 with prior knowledge (what gRPC clients speak), SETTINGS, PING, GOAWAY,
  RST_STREAM, padding, priority fields, CONTINUATION, concurrent streams;
- flow control both ways, enforced: DATA beyond a window is FLOW_CONTROL_ERROR, and so
  is a WINDOW_UPDATE or SETTINGS that pushes a window past 2^31-1 (§6.9.1, §6.9.2);
- frames on streams that were never opened are a connection error, on closed ones a
  stream error (§5.1, §6.1); a peer that breaks HTTP/2 gets GOAWAY with the error code;
- unary calls: one length-prefixed message in, one out, status in the trailers
  (grpc-status, percent-encoded grpc-message); a request larger than the limit is
  answered RESOURCE_EXHAUSTED as soon as its length prefix is read, an unknown method
  UNIMPLEMENTED, a compressed one UNIMPLEMENTED.
Abuse is bounded as grpc-core bounds it (docs/reliability.md): PING strikes, then
GOAWAY(ENHANCE_YOUR_CALM, "too_many_pings"); a token bucket for frames that cost work
and carry none (SETTINGS, RST_STREAM, PRIORITY, empty and unknown frames); at most
MAX_CONTINUATIONS frames per header block; reading paused while the peer does not
read what it made us queue; a stream the client reset still counts against
MAX_CONCURRENT_STREAMS until its handler returns, and one reset before its worker
started is never run. Request bytes are reserved against the shared BufferBudget when
a message's length prefix arrives. Deadlines (grpc-timeout) bound how long a request
may take to arrive; a running TensorFlow call cannot be interrupted.
"""

from __future__ import annotations

import collections
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable

import numpy as np
from hpack.exceptions import HPACKError

from serveprof.server.event_loop import FOREVER, Connection, EventLoop, WorkerPool, quiet_log
from serveprof.server.limits import Limits
from serveprof.wire.http2 import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    ENHANCE_YOUR_CALM,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    LARGEST_FRAME,
    MAX_CONTINUATIONS,
    MAX_HEADER_BLOCK,
    MAX_WINDOW,
    NO_ERROR,
    PING,
    PREFACE,
    PRIORITY,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    HeaderDecoder,
    Http2Error,
    data_frame,
    frame,
    frame_header,
    grpc_message_encode,
    grpc_prefix,
    header_block,
    parse_grpc_timeout,
)
from serveprof.wire.status import Code, ServingError

log = logging.getLogger("serveprof.serve")

MAX_CONCURRENT_STREAMS = 100
MAX_HEADER_LIST_BYTES = 16 * 1024
MAX_CONTROL_FRAME = MAX_HEADER_BLOCK  # any frame but DATA: nothing gRPC sends is larger
MAX_SETTINGS = 64  # entries in one SETTINGS frame; RFC 9113 defines 6
READ_CHUNK = 256 * 1024
DIRECT_READS = 64  # reads straight into one message per wake-up: a few MiB, so other connections are not kept waiting
PAUSE_READING_AT = 1 << 20  # bytes queued for a peer that does not read: its frames wait (grpc-core pauses too)
TOP_UP_AT = 1 << 30  # connection-window bytes consumed before a WINDOW_UPDATE
# grpc-core's ping abuse policy (chttp2 ping_abuse_policy.cc): a PING sooner than this after the last one, with
# no HEADERS or DATA sent in between, is a strike; more than MAX_PING_STRIKES strikes end the connection.
PING_INTERVAL_S, PING_INTERVAL_IDLE_S, MAX_PING_STRIKES = 300.0, 7200.0, 2
# Frames that make work and carry no request: a bucket of CALM_BURST, refilled at CALM_PER_S a second.
CALM_BURST, CALM_PER_S = 1000, 100.0
RECENTLY_RESET_KEPT = 1024  # stream ids we reset: frames the client had in flight on them are ignored
LINGER_S = 1.0  # after a GOAWAY for an error, what the peer still sends is read and dropped this long
OVERLOADED = "Server Threadpool Exhausted"  # grpc++'s sync server, when --grpc_max_threads are all busy
RESPONSE_HEADERS = b"\x88" + header_block([(b"content-type", b"application/grpc")])  # 0x88: ":status: 200"
OK_TRAILERS = header_block([(b"grpc-status", b"0")])
_PREFACE, _SETTINGS, _OPEN = range(3)

# A method takes the request message (a read-only-by-convention memoryview) and returns the response message's bytes;
# it raises ServingError for a status other than OK.
Method = Callable[[bytes], bytes]
ALIGNMENT = 64  # TensorFlow's EIGEN_MAX_ALIGN_BYTES with AVX-512: a feed whose data is not so aligned is copied


def message_buffer(size: int, payload_offset: int | None) -> np.ndarray:
    """``size`` bytes for a request; if ``payload_offset`` is given, placed so that byte lands ALIGNMENT-aligned.

    Pages are only committed as the bytes arrive. A repeated request (what a measurement
    sends) puts its tensor at the same offset as the last one, so its payload is then fed to
    TensorFlow where it lies; a wrong guess costs only the copy TensorFlow would make anyway.
    """
    if payload_offset is None:
        return np.empty(size, np.uint8)
    base = np.empty(size + ALIGNMENT - 1, np.uint8)
    shift = -(base.ctypes.data + payload_offset) % ALIGNMENT
    return base[shift : shift + size]


def status_headers(code: int, message: str) -> bytes:
    return header_block([(b"grpc-status", str(code).encode()), (b"grpc-message", grpc_message_encode(message))])


class GrpcServer:
    """Serves ``methods`` (``{"/pkg.Service/Method": Method}``) on ``host:port`` until ``stop``."""

    def __init__(
        self,
        methods: dict[str, Method],
        host: str,
        port: int,
        max_workers: int,
        max_message_bytes: int,
        unimplemented: Callable[[str], str] = lambda path: f"Method not found: {path}",
        limits: Limits | None = None,
        payload_offsets: dict[str, int] | None = None,
    ):
        self.methods, self.unimplemented = methods, unimplemented
        # Per method, where the largest tensor payload of its last request began (its handler says); the next
        # message is placed so that a payload there is ALIGNMENT-aligned and TensorFlow feeds it without a copy.
        self.payload_offsets = payload_offsets if payload_offsets is not None else {}
        self.max_message_bytes = max_message_bytes
        self.limits = limits or Limits()
        # A request up to 64 MiB streams in without waiting for window updates.
        self.initial_window = min(max_message_bytes + 5, 64 << 20, MAX_WINDOW)
        settings = struct.pack(
            ">HIHIHIHI",
            SETTINGS_MAX_CONCURRENT_STREAMS,
            MAX_CONCURRENT_STREAMS,
            SETTINGS_INITIAL_WINDOW_SIZE,
            self.initial_window,
            SETTINGS_MAX_FRAME_SIZE,
            LARGEST_FRAME,
            SETTINGS_MAX_HEADER_LIST_SIZE,
            MAX_HEADER_LIST_BYTES,
        )
        self.greeting = frame(SETTINGS, 0, 0, settings) + frame(
            WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW)
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=1024)
        self.port = listener.getsockname()[1]
        try:
            self.pool = WorkerPool(max_workers, self.limits.max_queued_requests, "grpc")
        except BaseException:
            listener.close()
            raise
        self.loop = EventLoop(
            "gRPC", listener, lambda loop, sock, peer: _Http2Connection(self, loop, sock, peer), self.limits
        )
        self._lock = threading.Condition()
        self._in_flight = 0
        self._stopping = False
        self._stopped = threading.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        self.loop.start()

    def stop(self, grace_s: float) -> threading.Event:
        """Refuse new calls, give the running ones ``grace_s``, then close everything; returns an Event set when done."""
        with self._lock:
            self._stopping = True
        self.loop.stop_accepting()
        self.loop.call_soon(self._say_goodbye)
        with self._lock:
            self._lock.wait_for(lambda: self._in_flight == 0, timeout=grace_s)
        self.loop.stop()
        self.pool.shutdown()
        self._stopped.set()
        return self._stopped

    def _say_goodbye(self) -> None:
        for connection in list(self.loop.connections):
            connection.go_away(NO_ERROR, "server shutting down")

    # Called by connections.
    def submit(self, stream: _Stream) -> bool:
        with self._lock:
            self._in_flight += 1
        if self.pool.submit(stream):
            return True
        self.finished()
        return False

    def finished(self) -> None:
        with self._lock:
            self._in_flight -= 1
            self._lock.notify_all()


class _Stream:
    """One call; also the WorkerPool job that runs it."""

    __slots__ = (
        "connection",
        "id",
        "path",
        "receiving",
        "answered",
        "reset",
        "submitted",
        "waiting",
        "prefix",
        "message",
        "filled",
        "reserved",
        "recv_window",
        "consumed",
        "send_window",
        "pending",
        "deadline",
    )

    def __init__(
        self, connection: _Http2Connection, stream_id: int, send_window: int, recv_window: int, deadline: float
    ):
        self.connection, self.id = connection, stream_id
        self.path = ""
        self.receiving = True  # the client has not ended its side
        self.answered = False  # our answer is sent or under way
        self.reset = False  # the client reset it, or we did
        self.submitted = False  # handed to the worker pool
        self.waiting = False  # in the pool's queue, not started
        self.prefix = bytearray()  # the gRPC message prefix: flag and length
        self.message: np.ndarray | None = None  # allocated once the prefix gives the length
        self.filled = 0
        self.reserved = 0  # bytes taken from the BufferBudget
        self.recv_window, self.consumed, self.send_window = recv_window, 0, send_window
        self.pending: list | None = None  # an answer waiting for window: [prefix, message view, sent, total]
        self.deadline = deadline  # for the request to arrive, then for the answer to leave

    def run(self) -> None:
        connection = self.connection
        server = connection.server
        try:
            if self.reset or connection.closed:
                connection.respond_nothing(self)
                return
            answer = error = None
            try:
                answer = server.methods[self.path](memoryview(self.message))
            except ServingError as failure:
                quiet_log(
                    logging.INFO,
                    f"gRPC {self.path} {failure.code.name}",
                    "gRPC %s from %s: %s: %s",
                    self.path,
                    connection.peer,
                    failure.code.name,
                    failure.message[:300],
                )
                error = failure.code.value, failure.message
            except Exception as failure:  # noqa: BLE001 - the server must outlive any one request
                log.exception("%s failed unexpectedly", self.path)
                error = Code.INTERNAL.value, f"{self.path} internal error: {type(failure).__name__}: {failure}"
            connection.release(self)  # the request's bytes are not needed to answer
            if error is None:
                connection.respond(self, answer)
            else:
                connection.respond_error(self, *error)
        finally:
            connection.ran(self)
            server.finished()


class _HeaderBlock:
    __slots__ = ("stream", "flags", "parts", "size", "frames")

    def __init__(self, stream: int, flags: int, fragment: bytes):
        self.stream, self.flags, self.parts, self.size, self.frames = stream, flags, [fragment], len(fragment), 0


class _Http2Connection(Connection):
    def __init__(self, server: GrpcServer, loop: EventLoop, sock: socket.socket, peer):
        super().__init__(loop, sock, peer)
        self.server, self.limits = server, server.limits
        self.stage = _PREFACE
        self.leftover = b""  # the start of a frame not yet whole
        self.decoder = HeaderDecoder(MAX_HEADER_LIST_BYTES)
        self.streams: dict[int, _Stream] = {}
        self.blocked: list[_Stream] = []  # answers waiting for the client's windows
        self.recently_reset: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.last_stream = 0
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.send_window = DEFAULT_WINDOW
        self.recv_window = MAX_WINDOW  # opened to the maximum by the greeting's WINDOW_UPDATE
        self.consumed = 0
        self.block: _HeaderBlock | None = None
        # The DATA frame being read: its stream (None when its bytes are dropped), bytes left, padding left, flags.
        self.data_stream: _Stream | None = None
        self.data_left = self.pad_left = self.data_flags = self.data_length = 0
        self.going_away = False
        self.goaway_sent = False
        self.lingering = False
        self.ping_strikes, self.last_ping = 0, -FOREVER
        self.calm_tokens, self.calm_time = float(CALM_BURST), time.monotonic()
        self.idle_since = self.accepted
        self.write_timeout_s = self.limits.request_timeout_s
        self.deadline = self.accepted + self.limits.handshake_timeout_s

    # ---------------------------------------------------------------- reading (loop thread)

    def on_readable(self) -> None:
        if self.lingering:
            self.drain()
            return
        try:
            with self.lock:
                if self.data_left and not self.leftover and self._read_into_message():
                    return
                chunk = self.sock.recv(READ_CHUNK)
                if not chunk:
                    self.closed = True
                    return
                buffer = self.leftover + chunk if self.leftover else chunk
                position = self._parse(buffer)
                self.leftover = buffer[position:] if position < len(buffer) else b""
                if self.out and self.out_bytes > PAUSE_READING_AT:
                    self.want_read = False  # until the peer reads what it made us queue
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.closed = True
        except Http2Error as error:
            quiet_log(logging.INFO, "gRPC broke HTTP/2", "gRPC connection from %s broke HTTP/2: %s", self.peer, error)
            self._fail(error.code, str(error))
        except HPACKError as error:
            quiet_log(
                logging.INFO,
                "gRPC HPACK",
                "gRPC connection from %s sent an undecodable header block: %s",
                self.peer,
                error,
            )
            self._fail(COMPRESSION_ERROR, "undecodable header block")

    def _read_into_message(self) -> bool:
        """Inside a DATA frame for a message with room: receive straight into it (no copy); False if not.

        It keeps reading while the socket has bytes, up to DIRECT_READS times, rather than
        wait for the loop between reads: a 19 MB request arrives in hundreds of reads.
        """
        stream = self.data_stream
        if stream is None or stream.message is None or stream.answered or stream.reset:
            return False
        view = memoryview(stream.message)
        for _ in range(DIRECT_READS):
            room = min(self.data_left, len(stream.message) - stream.filled)
            if room < 4096:
                return _ > 0
            try:
                received = self.sock.recv_into(view[stream.filled : stream.filled + room])
            except (BlockingIOError, InterruptedError):
                return True
            if not received:
                self.closed = True
                return True
            stream.filled += received
            self.data_left -= received
            if not self.data_left and not self.pad_left:
                self._end_data_frame()
                return True
        return True

    def _parse(self, buffer: bytes) -> int:
        position, end = 0, len(buffer)
        while position < end and not self.closed and not self.lingering:
            if self.stage == _PREFACE:
                got = buffer[position : position + len(PREFACE)]
                if not PREFACE.startswith(got):
                    raise Http2Error(PROTOCOL_ERROR, "not the HTTP/2 client preface (gRPC needs HTTP/2)")
                if len(got) < len(PREFACE):
                    break
                position += len(PREFACE)
                self.stage = _SETTINGS
                self.send_locked([self.server.greeting])
                continue
            if self.data_left or self.pad_left:
                take = min(self.data_left, end - position)
                if take:
                    self._data_bytes(buffer, position, take)
                    position += take
                    self.data_left -= take
                skip = min(self.pad_left, end - position)
                position += skip
                self.pad_left -= skip
                if not self.data_left and not self.pad_left:
                    self._end_data_frame()
                continue
            if end - position < 9:
                break
            length = int.from_bytes(buffer[position : position + 3], "big")
            kind, flags = buffer[position + 3], buffer[position + 4]
            stream_id = int.from_bytes(buffer[position + 5 : position + 9], "big") & 0x7FFFFFFF
            if self.stage == _SETTINGS and kind != SETTINGS:
                raise Http2Error(PROTOCOL_ERROR, "the client preface must be followed by SETTINGS")
            if self.block is not None and (kind != CONTINUATION or stream_id != self.block.stream):
                raise Http2Error(PROTOCOL_ERROR, "a header block was not continued by a CONTINUATION frame")
            if kind == DATA:
                padding = 0
                if flags & FLAG_PADDED:
                    if end - position < 10:
                        break
                    padding = buffer[position + 9]
                    if length < 1 or padding > length - 1:
                        raise Http2Error(PROTOCOL_ERROR, "a padded frame is shorter than its padding")
                position += 10 if flags & FLAG_PADDED else 9
                self._start_data(length, flags, stream_id, padding)
                if not self.data_left and not self.pad_left:
                    self._end_data_frame()
                continue
            if length > MAX_CONTROL_FRAME:
                raise Http2Error(
                    FRAME_SIZE_ERROR,
                    f"a frame of type {kind} with {length} bytes (at most {MAX_CONTROL_FRAME} but in DATA)",
                )
            if end - position < 9 + length:
                break
            payload = buffer[position + 9 : position + 9 + length]
            position += 9 + length
            self._frame(kind, flags, stream_id, payload)
        return position

    def _frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if kind == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == PING:
            self._on_ping(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == RST_STREAM:
            self._on_rst_stream(stream_id, payload)
        elif kind == GOAWAY:
            if stream_id != 0:
                raise Http2Error(PROTOCOL_ERROR, "GOAWAY on a stream")
            self.going_away = True
        elif kind == PRIORITY:
            if stream_id == 0:
                raise Http2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._calm("PRIORITY frames")
            if len(payload) != 5:
                self._stream_error(stream_id, FRAME_SIZE_ERROR)
        elif kind == PUSH_PROMISE:
            raise Http2Error(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:
            self._calm("frames of unknown types")  # ignored otherwise (RFC 9113 §5.5)

    # -- DATA
    def _start_data(self, length: int, flags: int, stream_id: int, padding: int) -> None:
        if stream_id == 0:
            raise Http2Error(PROTOCOL_ERROR, "DATA on stream 0")
        if length > self.recv_window:
            raise Http2Error(
                FLOW_CONTROL_ERROR, f"DATA of {length} bytes with {self.recv_window} left in the connection's window"
            )
        self.recv_window -= length
        self.consumed += length
        if self.consumed >= TOP_UP_AT:
            self.send_locked([frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.consumed))])
            self.recv_window += self.consumed
            self.consumed = 0
        stream = self.streams.get(stream_id)
        self.data_stream = None
        if stream is None:
            if stream_id > self.last_stream:
                raise Http2Error(PROTOCOL_ERROR, f"DATA on stream {stream_id}, which was never opened")
            if stream_id not in self.recently_reset:
                self._stream_error(stream_id, STREAM_CLOSED)
        elif not stream.receiving or stream.reset:
            self._stream_error(stream, STREAM_CLOSED)
        elif length > stream.recv_window:
            self._stream_error(stream, FLOW_CONTROL_ERROR)
        else:
            stream.recv_window -= length
            stream.consumed += length
            self.data_stream = stream
        self.data_left = length - padding - (1 if flags & FLAG_PADDED else 0)
        self.pad_left, self.data_flags, self.data_length = padding, flags, length

    def _data_bytes(self, buffer: bytes, position: int, count: int) -> None:
        stream = self.data_stream
        if stream is None or stream.answered or stream.reset:
            return  # flow control counted them; nothing keeps them
        view = memoryview(buffer)[position : position + count]
        if stream.message is None:
            take = min(5 - len(stream.prefix), count)
            stream.prefix += view[:take]
            view = view[take:]
            if len(stream.prefix) < 5 or not self._allocate(stream):
                return
        room = len(stream.message) - stream.filled
        take = min(room, len(view))
        if take:
            memoryview(stream.message)[stream.filled : stream.filled + take] = view[:take]
            stream.filled += take
        if len(view) > take:
            self.respond_error(
                stream,
                Code.INTERNAL.value,
                "Exception deserializing request! (more bytes than the "
                "message's length prefix: one unary request has one message)",
            )

    def _allocate(self, stream: _Stream) -> bool:
        """The length prefix is in: reserve and allocate the message, or answer; False if answered."""
        declared = int.from_bytes(stream.prefix[1:5], "big")
        if stream.prefix[0] != 0:
            self.respond_error(stream, Code.UNIMPLEMENTED.value, "compressed requests are not supported")
            return False
        if declared > self.server.max_message_bytes:
            # gRPC's own wording; the message is never read into memory.
            self.respond_error(
                stream,
                Code.RESOURCE_EXHAUSTED.value,
                f"Received message larger than max ({declared} vs. {self.server.max_message_bytes})",
            )
            return False
        budget = self.limits.budget
        if not budget.reserve(declared):
            self.respond_error(
                stream,
                Code.RESOURCE_EXHAUSTED.value,
                f"the server holds {budget.used} bytes of requests and may hold {budget.limit} "
                f"(--max_buffered_bytes); a {declared}-byte message does not fit now, retry later",
            )
            return False
        stream.reserved = declared
        stream.message = message_buffer(declared, self.server.payload_offsets.get(stream.path))
        return True

    def _end_data_frame(self) -> None:
        stream, flags = self.data_stream, self.data_flags
        self.data_stream = None
        if not self.data_length and not flags & FLAG_END_STREAM:
            self._calm("empty DATA frames")
        if stream is None or self.streams.get(stream.id) is not stream:
            return
        if flags & FLAG_END_STREAM:
            self._request_complete(stream)
        elif stream.receiving and not stream.answered and stream.consumed >= self.server.initial_window // 2:
            self.send_locked([frame(WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.consumed))])
            stream.recv_window += stream.consumed
            stream.consumed = 0

    # -- HEADERS
    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id == 0:
            raise Http2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        fragment = payload
        if flags & FLAG_PADDED:
            if not fragment or fragment[0] >= len(fragment):
                raise Http2Error(PROTOCOL_ERROR, "a padded frame is shorter than its padding")
            fragment = fragment[1 : len(fragment) - fragment[0]]
        if flags & FLAG_PRIORITY:
            if len(fragment) < 5:
                raise Http2Error(FRAME_SIZE_ERROR, "HEADERS too short for its priority fields")
            fragment = fragment[5:]
        if flags & FLAG_END_HEADERS:
            self._header_block(stream_id, flags, fragment)
        else:
            if not fragment:
                self._calm("empty header fragments")
            self.block = _HeaderBlock(stream_id, flags, fragment)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        block = self.block
        if block is None:
            raise Http2Error(PROTOCOL_ERROR, "CONTINUATION without a header block in progress")
        block.frames += 1
        if block.frames > MAX_CONTINUATIONS:
            raise Http2Error(ENHANCE_YOUR_CALM, f"a header block in more than {MAX_CONTINUATIONS} CONTINUATION frames")
        block.size += len(payload)
        if block.size > MAX_HEADER_BLOCK:
            raise Http2Error(FRAME_SIZE_ERROR, f"a header block of more than {MAX_HEADER_BLOCK} bytes")
        if not payload and not flags & FLAG_END_HEADERS:
            self._calm("empty CONTINUATION frames")
        block.parts.append(payload)
        if flags & FLAG_END_HEADERS:
            self.block = None
            self._header_block(stream_id, block.flags, b"".join(block.parts))

    def _header_block(self, stream_id: int, flags: int, block: bytes) -> None:
        headers = self.decoder.decode(block)  # every block, in order, for the HPACK table
        stream = self.streams.get(stream_id)
        if stream is not None:  # trailers after the request's DATA
            if not flags & FLAG_END_STREAM:
                raise Http2Error(PROTOCOL_ERROR, "a second header block that does not end the stream")
            if not stream.receiving or stream.reset:
                self._stream_error(stream, STREAM_CLOSED)
            else:
                self._request_complete(stream)
            return
        if stream_id % 2 == 0:
            raise Http2Error(PROTOCOL_ERROR, f"stream id {stream_id} is not a client stream")
        if stream_id <= self.last_stream:
            if stream_id in self.recently_reset:
                return
            raise Http2Error(STREAM_CLOSED, f"HEADERS on stream {stream_id}, which is closed")
        self.last_stream = stream_id
        if self.going_away or self.server.stopping or len(self.streams) >= MAX_CONCURRENT_STREAMS:
            self._stream_error(stream_id, REFUSED_STREAM)
            return
        fields = dict(headers)
        now = time.monotonic()
        timeout = parse_grpc_timeout(fields.get("grpc-timeout", ""))
        limit = self.limits.request_timeout_s if timeout is None else min(timeout, self.limits.request_timeout_s)
        stream = _Stream(self, stream_id, self.peer_initial_window, self.server.initial_window, now + limit)
        self.streams[stream_id] = stream
        self.deadline = min(self.deadline, stream.deadline)
        stream.path = fields.get(":path", "")
        problem = _request_problem(fields)
        if problem is not None:
            status, code, message = problem
            self.respond_error(stream, code, message, http_status=status)
        elif stream.path not in self.server.methods:
            self.respond_error(stream, Code.UNIMPLEMENTED.value, self.server.unimplemented(stream.path))
        elif flags & FLAG_END_STREAM:
            self._request_complete(stream)

    def _request_complete(self, stream: _Stream) -> None:
        stream.receiving = False
        if stream.answered:
            self._retire(stream)
            return
        if stream.message is None or stream.filled != len(stream.message):
            self.respond_error(
                stream,
                Code.INTERNAL.value,
                "Exception deserializing request! (the body is not one length-prefixed gRPC message)",
            )
            return
        stream.answered = stream.submitted = True
        if not self.server.submit(stream):
            stream.submitted = False
            self.respond_error(stream, Code.RESOURCE_EXHAUSTED.value, OVERLOADED)
            self.release(stream)

    # -- control frames
    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise Http2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if payload:
                raise Http2Error(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise Http2Error(FRAME_SIZE_ERROR, "a SETTINGS payload must be a multiple of 6 bytes")
        if len(payload) > 6 * MAX_SETTINGS:
            raise Http2Error(ENHANCE_YOUR_CALM, f"a SETTINGS frame with {len(payload) // 6} entries")
        if self.stage == _OPEN:
            self._calm("SETTINGS frames")
        else:
            self.stage = _OPEN
            self.idle_since = time.monotonic()
            self.deadline = self.idle_since + self.limits.idle_timeout_s
        for key, value in struct.iter_unpack(">HI", payload):
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Http2Error(FLOW_CONTROL_ERROR, "initial window size over 2^31-1")
                delta = value - self.peer_initial_window
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise Http2Error(
                            FLOW_CONTROL_ERROR,
                            "a SETTINGS_INITIAL_WINDOW_SIZE change pushes a stream's window past 2^31-1",
                        )
                self.peer_initial_window = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_MAX_FRAME <= value <= LARGEST_FRAME:
                    raise Http2Error(PROTOCOL_ERROR, f"max frame size {value} out of range")
                self.peer_max_frame = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise Http2Error(PROTOCOL_ERROR, f"SETTINGS_ENABLE_PUSH of {value}")
        self.send_locked([frame(SETTINGS, FLAG_ACK, 0)])
        self._pump_blocked()

    def _on_ping(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id != 0:
            raise Http2Error(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise Http2Error(FRAME_SIZE_ERROR, "a PING must carry 8 bytes on stream 0")
        if flags & FLAG_ACK:
            return
        now = time.monotonic()
        if now < self.last_ping + (PING_INTERVAL_S if self.streams else PING_INTERVAL_IDLE_S):
            self.ping_strikes += 1
            if self.ping_strikes > MAX_PING_STRIKES:
                raise Http2Error(ENHANCE_YOUR_CALM, "too_many_pings")
        self.last_ping = now
        self.send_locked([frame(PING, FLAG_ACK, 0, payload)])

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise Http2Error(FRAME_SIZE_ERROR, "a WINDOW_UPDATE must carry 4 bytes")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if stream_id == 0:
            if increment == 0:
                raise Http2Error(PROTOCOL_ERROR, "a WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise Http2Error(FLOW_CONTROL_ERROR, "a WINDOW_UPDATE pushes the connection's window past 2^31-1")
        else:
            stream = self.streams.get(stream_id)
            if stream is None:
                if stream_id > self.last_stream:
                    raise Http2Error(PROTOCOL_ERROR, f"WINDOW_UPDATE on stream {stream_id}, which was never opened")
                self._calm("WINDOW_UPDATE frames on closed streams")
                return  # frames in flight when a stream closed (§6.9)
            if increment == 0:
                self._stream_error(stream, PROTOCOL_ERROR)
                return
            stream.send_window += increment
            if stream.send_window > MAX_WINDOW:
                self._stream_error(stream, FLOW_CONTROL_ERROR)
                return
        self._pump_blocked()

    def _on_rst_stream(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise Http2Error(FRAME_SIZE_ERROR, "a RST_STREAM must carry 4 bytes")
        if stream_id == 0 or stream_id > self.last_stream:
            raise Http2Error(PROTOCOL_ERROR, f"RST_STREAM on stream {stream_id}, which was never opened")
        self._calm("RST_STREAM frames")
        stream = self.streams.get(stream_id)
        if stream is not None:
            self._reset(stream)

    def _calm(self, what: str) -> None:
        now = time.monotonic()
        self.calm_tokens = min(CALM_BURST, self.calm_tokens + (now - self.calm_time) * CALM_PER_S) - 1
        self.calm_time = now
        if self.calm_tokens < 0:
            raise Http2Error(ENHANCE_YOUR_CALM, f"too many {what}")

    # -- stream ends (lock held)
    def _stream_error(self, stream: _Stream | int, code: int) -> None:
        """RST_STREAM with ``code`` (RFC 9113 §5.4.2); the stream's work is dropped if it has not started."""
        stream_id = stream if isinstance(stream, int) else stream.id
        self._calm("streams in error")
        self.send_locked([frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))])
        self._remember_reset(stream_id)
        if not isinstance(stream, int):
            self._reset(stream)

    def _reset(self, stream: _Stream) -> None:
        stream.reset, stream.receiving = True, False
        stream.pending = None
        if stream.submitted and self.server.pool.cancel(stream):
            stream.submitted = False
            self.server.finished()
        if not stream.submitted:  # a running handler keeps counting against MAX_CONCURRENT_STREAMS until it returns
            self.release(stream)
            self._retire(stream)

    def _remember_reset(self, stream_id: int) -> None:
        self.recently_reset[stream_id] = None
        if len(self.recently_reset) > RECENTLY_RESET_KEPT:
            self.recently_reset.popitem(last=False)

    def _retire(self, stream: _Stream) -> None:
        if self.streams.pop(stream.id, None) is not None and not self.streams:
            self.idle_since = time.monotonic()
            self.deadline = min(self.deadline, self.idle_since + self.limits.idle_timeout_s)

    def ran(self, stream: _Stream) -> None:
        """The handler of ``stream`` has returned (worker thread)."""
        with self.lock:
            stream.submitted = False
            self.release(stream)
            if stream.reset:
                self._retire(stream)

    def release(self, stream: _Stream) -> None:
        with self.lock:
            if stream.reserved:
                self.limits.budget.release(stream.reserved)
                stream.reserved = 0
            stream.message = None

    # ---------------------------------------------------------------- writing (any thread)

    def respond(self, stream: _Stream, message: bytes) -> None:
        """HEADERS, the message in DATA frames within the client's windows, then the OK trailers."""
        with self.lock:
            if self.closed or stream.reset:
                self._retire(stream)
                return
            self.ping_strikes, self.last_ping = 0, -FOREVER
            stream.pending = [grpc_prefix(len(message)), memoryview(message), 0, 5 + len(message)]
            buffers = [frame_header(len(RESPONSE_HEADERS), HEADERS, FLAG_END_HEADERS, stream.id), RESPONSE_HEADERS]
            self._pump(stream, buffers)
            self.send_locked(buffers)
            if stream.pending is not None:
                self.blocked.append(stream)
                stream.deadline = time.monotonic() + self.limits.request_timeout_s
                self.deadline = min(self.deadline, stream.deadline)

    def respond_error(self, stream: _Stream, code: int, message: str, http_status: int = 200) -> None:
        """A trailers-only answer: HTTP status, content type and the gRPC status in one header block."""
        stream.answered = True
        status = b"\x88" if http_status == 200 else header_block([(b":status", str(http_status).encode())])
        block = status + header_block([(b"content-type", b"application/grpc")]) + status_headers(code, message)
        with self.lock:
            if self.closed or stream.reset:
                self._retire(stream)
                return
            self.ping_strikes, self.last_ping = 0, -FOREVER
            buffers = [frame_header(len(block), HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream.id), block]
            self._finish(stream, buffers)
            self.send_locked(buffers)

    def respond_nothing(self, stream: _Stream) -> None:
        with self.lock:
            self._retire(stream)

    def _pump(self, stream: _Stream, buffers: list) -> None:
        """Add DATA frames of ``stream``'s answer within the windows, and its trailers once all is out (lock held)."""
        prefix, view, sent, total = stream.pending
        while sent < total:
            allowed = min(total - sent, self.send_window, stream.send_window, self.peer_max_frame)
            if allowed <= 0:
                stream.pending[2] = sent
                return
            buffers += data_frame(stream.id, prefix, view, sent, allowed)
            sent += allowed
            self.send_window -= allowed
            stream.send_window -= allowed
        stream.pending = None
        buffers += [frame_header(len(OK_TRAILERS), HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream.id), OK_TRAILERS]
        self._finish(stream, buffers)

    def _pump_blocked(self) -> None:
        if not self.blocked:
            return
        buffers, still = [], []
        for stream in self.blocked:
            if stream.pending is None:
                continue
            self._pump(stream, buffers)
            if stream.pending is not None:
                still.append(stream)
        self.blocked = still
        if buffers:
            self.send_locked(buffers)

    def _finish(self, stream: _Stream, buffers: list) -> None:
        """After our END_STREAM: a client still sending is asked to stop (RST_STREAM NO_ERROR, RFC 9113 §8.1)."""
        if stream.receiving:
            buffers += [frame(RST_STREAM, 0, stream.id, struct.pack(">I", NO_ERROR))]
            stream.receiving = False
            self._remember_reset(stream.id)
        self._retire(stream)

    def on_flushed(self) -> None:
        self.want_read = True
        if self.lingering:
            self.shut_write()

    def go_away(self, code: int, message: str) -> None:
        with self.lock:
            self.going_away = True
            if self.goaway_sent or self.closed:
                return
            self.goaway_sent = True
            self.send_locked([frame(GOAWAY, 0, 0, struct.pack(">II", self.last_stream, code) + message.encode()[:200])])

    def _fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY, drop every stream, then read and drop what still comes for LINGER_S."""
        self.go_away(code, message)
        with self.lock:
            for stream in list(self.streams.values()):
                self._reset(stream)
            self.lingering = True
            self.want_read = True
            self.deadline = time.monotonic() + LINGER_S
            if not self.out:
                self.shut_write()

    # ---------------------------------------------------------------- time (loop thread)

    def on_deadline(self, now: float) -> None:
        with self.lock:
            if self.lingering:
                self.closed = True
                return
            if self.stage != _OPEN:
                if now >= self.accepted + self.limits.handshake_timeout_s:
                    quiet_log(
                        logging.INFO,
                        "gRPC handshake",
                        "gRPC connection from %s sent no HTTP/2 preface and SETTINGS within %.1f s; closing it",
                        self.peer,
                        self.limits.handshake_timeout_s,
                    )
                    self.closed = True
                return
            if self.write_stalled(now):
                return
            upcoming = FOREVER if self.out_since is None else self.out_since + self.limits.request_timeout_s
            for stream in list(self.streams.values()):
                if stream.submitted and stream.pending is None:
                    continue  # its handler is running
                if now >= stream.deadline:
                    self._expire(stream)
                else:
                    upcoming = min(upcoming, stream.deadline)
            if not self.streams and not self.out:
                if now >= self.idle_since + self.limits.idle_timeout_s:
                    quiet_log(
                        logging.INFO,
                        "gRPC idle",
                        "gRPC connection from %s idle for %.0f s; closing it",
                        self.peer,
                        self.limits.idle_timeout_s,
                    )
                    self.go_away(NO_ERROR, "idle")
                    self.closed = True
                    return
                upcoming = min(upcoming, self.idle_since + self.limits.idle_timeout_s)
            self.deadline = upcoming

    def _expire(self, stream: _Stream) -> None:
        if stream.pending is not None:
            quiet_log(
                logging.WARNING,
                "gRPC window",
                "gRPC client %s gave no flow-control window for the answer on stream %d within %.0f s; dropping it",
                self.peer,
                stream.id,
                self.limits.request_timeout_s,
            )
            self._stream_error(stream, CANCEL)
        else:
            quiet_log(
                logging.INFO,
                "gRPC body",
                "gRPC request from %s on stream %d did not arrive whole in time; answering DEADLINE_EXCEEDED",
                self.peer,
                stream.id,
            )
            self.respond_error(
                stream,
                Code.DEADLINE_EXCEEDED.value,
                "the request did not arrive whole before its deadline (grpc-timeout, or --grpc_request_timeout_ms)",
            )
            self.release(stream)

    # ---------------------------------------------------------------- the loop's questions

    def evictable(self) -> bool:
        return not self.streams and not self.out

    def evict(self) -> None:
        self.go_away(NO_ERROR, "too many connections")

    def on_closed(self) -> None:
        with self.lock:
            for stream in list(self.streams.values()):
                if stream.submitted and self.server.pool.cancel(stream):
                    stream.submitted = False
                    self.server.finished()
                if not stream.submitted:
                    self.release(stream)
            self.blocked = []


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
