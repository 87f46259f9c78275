"""The HTTP/1.1 server that carries TF Serving's REST API (``rest_api.RestApi``).

Connections are read by the API's ``EventLoop`` thread; a request read whole goes to
a pool of --rest_api_num_threads workers through a bounded queue, and the worker
writes the answer (see event_loop). A request must arrive whole within
--rest_api_timeout_in_ms of its first byte, a new connection must send its first
request head within --handshake_timeout_ms, and a kept-alive connection idle for
--rest_api_timeout_in_ms is closed.

Framing follows RFC 9112 strictly, because a lenient reading is how requests are
smuggled past a proxy: Content-Length together with Transfer-Encoding, two different
Content-Lengths, and any transfer coding but a final ``chunked`` are refused and the
connection closed. A body larger than --max_request_bytes is refused with 413 from
its Content-Length alone, before any of it is read; a chunked body counts its chunk
framing against the same cap, so 2-byte chunks cannot hold ten times the cap.
Why not http.server: it runs a thread per connection (20,000 idle connections made
20,000 threads) and reads with per-read timeouts only.
"""

from __future__ import annotations

import http
import logging
import re
import socket
import time

import numpy as np
import orjson

from serveprof.server.bind_errors import bind_error
from serveprof.server.core import ServingCore
from serveprof.server.event_loop import FOREVER, Connection, EventLoop, WorkerPool, quiet_log
from serveprof.server.limits import Limits
from serveprof.server.rest_api import RestApi

log = logging.getLogger("serveprof.serve")

READ_CHUNK = 256 * 1024
MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_LINES = 100
MAX_CHUNK_LINE = 1024
MAX_TRAILER_BYTES = 8 * 1024
DRAIN_S = 2.0  # after an answer that closes, what the client still sends is read and dropped this long
DIRECT_READ_AT = 64 * 1024  # a body part at least this large is received straight into the body buffer
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)  # str.isdigit would also take "¹" and "٣"
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_HEAD, _BODY, _CHUNKS, _BUSY = range(4)


class _Refusal(Exception):
    """The request cannot be served: answer ``status`` with ``message`` and close the connection."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class RestServer:
    """TF Serving's REST API on ``host:port``, served by an EventLoop and a WorkerPool."""

    def __init__(
        self, api: RestApi, host: str, port: int, num_threads: int, timeout_s: float, max_body: int, limits: Limits
    ):
        self.api, self.timeout_s, self.max_body, self.limits = api, timeout_s, max_body, limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=1024)
        self.server_address = listener.getsockname()
        self.port = self.server_address[1]
        try:
            self.pool = WorkerPool(num_threads, limits.max_queued_requests, "rest")
        except BaseException:
            listener.close()
            raise
        self.loop = EventLoop(
            "REST", listener, lambda loop, sock, peer: _RestConnection(self, loop, sock, peer), limits
        )
        self.loop.start()

    def shutdown(self) -> None:
        """Stop accepting and close idle connections; requests in flight finish (``api.wait_idle``)."""
        self.loop.stop_accepting()
        self.loop.call_soon(self._close_idle)

    def server_close(self) -> None:
        self.loop.stop_accepting()

    def stop(self) -> None:
        """Close everything now."""
        self.loop.stop()
        self.pool.shutdown()

    def _close_idle(self) -> None:
        for connection in list(self.loop.connections):
            if connection.evictable():
                connection.closed = True
                self.loop.update(connection)


class _Job:
    __slots__ = ("connection", "method", "path", "body", "close", "reserved", "waiting")

    def __init__(self, connection, method: str, path: str, body: bytes, close: bool, reserved: int):
        self.connection, self.method, self.path, self.body, self.close = connection, method, path, body, close
        self.reserved = reserved  # budget bytes this request's body holds
        self.waiting = False

    def run(self) -> None:
        connection = self.connection
        api = connection.server.api
        try:
            with api.request_in_flight():
                status, payload = api.handle(self.method, self.path.split("?", 1)[0], self.body)
                self.body = b""
                connection.respond(status, payload, self.close, self.method == "HEAD")
        finally:
            self.release()

    def release(self) -> None:
        if self.reserved:
            self.connection.limits.budget.release(self.reserved)
            self.reserved = 0


class _RestConnection(Connection):
    def __init__(self, server: RestServer, loop: EventLoop, sock: socket.socket, peer):
        super().__init__(loop, sock, peer)
        self.server, self.limits = server, server.limits
        self.buffer = bytearray()  # received, not yet parsed
        self.state = _HEAD
        self.requests = 0
        self.started: float | None = None  # when the current request's first byte came
        self.idle_since = self.accepted
        self.write_timeout_s = server.timeout_s
        self.lingering = False
        self.close_after_flush = False
        self.reserved = 0  # budget bytes of the body being read
        self.job: _Job | None = None
        self.scanned = 0  # how far the head in ``buffer`` has been searched for its end
        self.deadline = self.accepted + self.limits.handshake_timeout_s
        self._new_request()

    def _new_request(self) -> None:
        self.method = self.target = ""
        self.keep_alive = True
        self.body: np.ndarray | bytearray | None = None
        self.filled = 0
        self.chunk_left = -1  # bytes of the current chunk still to come; -1: a chunk-size line is next
        self.wire = 0  # body bytes on the wire, chunk framing included

    # ---------------------------------------------------------------- reading (loop thread)

    def on_readable(self) -> None:
        if self.lingering:
            self.drain()
            return
        with self.lock:
            try:
                if self.state == _BODY and not self.buffer and len(self.body) - self.filled >= DIRECT_READ_AT:
                    received = self.sock.recv_into(memoryview(self.body)[self.filled :])
                    if not received:
                        self.closed = True
                        return
                    self.filled += received
                    self._advance()
                    return
                chunk = self.sock.recv(READ_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.closed = True
                return
            if not chunk:
                if self.state == _BUSY:
                    self.want_read = False  # the client half-closed: answer, then close
                    self.keep_alive = False
                else:
                    self.closed = True
                return
            if self.started is None and self.state == _HEAD:
                self.started = time.monotonic()
                self.deadline = min(self.deadline, self.started + self.server.timeout_s)
            self.buffer += chunk
            if self.state == _BUSY:
                if len(self.buffer) > MAX_HEAD_BYTES:
                    self.want_read = False  # pipelined requests wait for the answer in progress
                return
            try:
                self._advance()
            except _Refusal as refusal:
                self._refuse(refusal.status, str(refusal))

    def _advance(self) -> None:
        """Parse what has arrived; dispatch a request once it is whole (lock held)."""
        while not self.closed and not self.lingering:
            if self.state == _HEAD:
                if not self._read_head():
                    return
            elif self.state == _BODY:
                take = min(len(self.body) - self.filled, len(self.buffer))
                if take:
                    memoryview(self.body)[self.filled : self.filled + take] = self.buffer[:take]
                    del self.buffer[:take]
                    self.filled += take
                if self.filled < len(self.body):
                    return
                self._dispatch(memoryview(self.body).tobytes())
            elif self.state == _CHUNKS:
                if not self._read_chunks():
                    return
            else:
                return

    def _read_head(self) -> bool:
        while self.buffer.startswith((b"\r\n", b"\n")):  # RFC 9112 §2.2: blank lines before a request line
            del self.buffer[: 1 if self.buffer[0] == 10 else 2]
        found = _HEAD_END.search(self.buffer, max(self.scanned - 3, 0), MAX_HEAD_BYTES + 4)
        if found is None:
            self.scanned = len(self.buffer)
            if len(self.buffer) > MAX_HEAD_BYTES:
                raise _Refusal(431, f"request head larger than {MAX_HEAD_BYTES} bytes")
            return False
        self.scanned = 0
        head = bytes(self.buffer[: found.start()])
        del self.buffer[: found.end()]
        self.requests += 1
        self._parse_head(head)
        return True

    def _parse_head(self, head: bytes) -> None:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in head.split(b"\n")]
        if len(lines) > MAX_HEADER_LINES + 1:
            raise _Refusal(431, f"more than {MAX_HEADER_LINES} header lines")
        parts = lines[0].split(b" ")
        if len(parts) != 3 or not _TOKEN.fullmatch(parts[0]) or not parts[1] or b"\r" in lines[0]:
            raise _Refusal(400, f"Bad request line {lines[0][:100].decode('latin-1')!r}")
        method, target, version = parts
        match = _VERSION.fullmatch(version)
        if match is None:
            raise _Refusal(400, f"Bad request version {version[:20].decode('latin-1')!r}")
        if match.group(1) != b"1":
            raise _Refusal(505, f"HTTP version {version.decode('latin-1')} is not supported (send HTTP/1.1)")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) or b"\r" in line:  # also obs-fold and "name :" (RFC 9112 §5)
                raise _Refusal(400, f"Bad header line {line[:100].decode('latin-1')!r}")
            headers.setdefault(name.decode("latin-1").lower(), []).append(value.strip(b" \t").decode("latin-1"))
        self.method, self.target = method.decode("latin-1"), target.decode("latin-1")
        old = match.group(2) == b"0"
        connection = ",".join(headers.get("connection", [])).lower()
        self.keep_alive = ("keep-alive" in connection) if old else ("close" not in connection)
        self._frame_body(headers, old)

    def _frame_body(self, headers: dict[str, list[str]], old: bool) -> None:
        """RFC 9112 §6: how the body is delimited, refusing every ambiguous framing."""
        codings = headers.get("transfer-encoding")
        lengths = headers.get("content-length")
        if codings is not None:
            if lengths is not None:
                raise _Refusal(400, "Content-Length together with Transfer-Encoding: send one of them")
            if old:
                raise _Refusal(400, "Transfer-Encoding in an HTTP/1.0 request")
            names = [name.strip().lower() for value in codings for name in value.split(",")]
            if names[-1:] != ["chunked"] or "chunked" in names[:-1] or "" in names:
                raise _Refusal(400, f"Transfer-Encoding {', '.join(codings)[:80]!r} does not end with one chunked")
            if len(names) > 1:
                raise _Refusal(
                    501, f"transfer coding {names[0][:40]!r} is not supported (send chunked alone, or Content-Length)"
                )
            self._expect_continue(headers)
            self.body = bytearray()
            self.state = _CHUNKS
            return
        if lengths is not None:
            values = {value.strip() for line in lengths for value in line.split(",")}
            if len(values) != 1:
                raise _Refusal(400, f"conflicting Content-Length values {sorted(values)[:4]}")
            declared = values.pop()
            if not _DECIMAL.fullmatch(declared):
                raise _Refusal(400, f"Content-Length {declared[:40]!r} is not a number")
            digits = declared.lstrip("0") or "0"
            length = int(digits) if len(digits) <= 18 else self.server.max_body + 1  # more digits than any cap
        else:
            length = 0
        self._check_size(length)
        if length:
            self._reserve(length)
            self._expect_continue(headers)
            self.body = np.empty(length, np.uint8)  # pages are only committed as the bytes arrive
            self.state = _BODY
        else:
            self._dispatch(b"")

    def _read_chunks(self) -> bool:
        """Chunked body (RFC 9112 §7.1); True once the request was dispatched."""
        buffer, position = self.buffer, 0
        try:
            while True:
                if self.chunk_left > 0:
                    take = min(self.chunk_left, len(buffer) - position)
                    self.body += buffer[position : position + take]
                    position += take
                    self.chunk_left -= take
                    if self.chunk_left:
                        return False
                if self.chunk_left == 0:  # the CRLF that ends a chunk's data
                    if len(buffer) - position < 2:
                        return False
                    if buffer[position : position + 2] != b"\r\n":
                        raise _Refusal(400, "malformed chunked body: a chunk is cut short or does not end with CRLF")
                    position += 2
                    self.chunk_left = -1
                if self.chunk_left == -2:  # after the last chunk: trailer fields, then an empty line
                    if buffer.startswith((b"\r\n", b"\n"), position):
                        position += 1 if buffer[position] == 10 else 2
                    else:
                        found = _HEAD_END.search(buffer, position, position + MAX_TRAILER_BYTES)
                        if found is None:
                            if len(buffer) - position >= MAX_TRAILER_BYTES:
                                raise _Refusal(400, f"chunked body trailers over {MAX_TRAILER_BYTES} bytes")
                            return False
                        position = found.end()
                    self._dispatch(bytes(self.body))
                    return True
                end = buffer.find(b"\n", position, position + MAX_CHUNK_LINE)
                if end < 0:
                    if len(buffer) - position >= MAX_CHUNK_LINE:
                        raise _Refusal(400, f"malformed chunked body: a chunk-size line over {MAX_CHUNK_LINE} bytes")
                    return False
                size_text = bytes(buffer[position:end]).rstrip(b"\r").split(b";", 1)[0].strip(b" \t")
                if not _CHUNK_SIZE.fullmatch(size_text):  # int(x, 16) alone would take "-1", "+1" and "1_0"
                    raise _Refusal(400, f"malformed chunked body: chunk size {size_text[:20]!r}")
                size = int(size_text, 16)
                framing = end + 1 - position + (2 if size else 0)  # the size line, and the CRLF after the data
                self._check_size(self.wire + framing + size)
                self._reserve(framing + size)
                self.wire += framing + size
                position = end + 1
                self.chunk_left = size if size else -2
        finally:
            del buffer[:position]

    def _check_size(self, length: int) -> None:
        if length > self.server.max_body:
            raise _Refusal(
                413,
                f"Request body of {length} bytes is larger than --max_request_bytes="
                f"{self.server.max_body}; send a smaller batch or start the server with a larger "
                "--max_request_bytes",
            )

    def _reserve(self, count: int) -> None:
        budget = self.limits.budget
        if not budget.reserve(count):
            raise _Refusal(
                429,
                f"the server holds {budget.used} bytes of requests and may hold {budget.limit} "
                "(--max_buffered_bytes); retry later",
            )
        self.reserved += count

    def _expect_continue(self, headers: dict[str, list[str]]) -> None:
        if "100-continue" in ",".join(headers.get("expect", [])).lower():
            self.send_locked([b"HTTP/1.1 100 Continue\r\n\r\n"])

    def _dispatch(self, body: bytes) -> None:
        self.state = _BUSY
        self.body = None
        job = _Job(self, self.method, self.target, body, not self.keep_alive, self.reserved)
        self.reserved = 0
        if self.server.pool.submit(job):
            self.job = job
        else:
            job.release()
            self._refuse(
                429,
                f"Server Threadpool Exhausted: {self.server.pool.max_queued} REST requests are queued "
                "(--max_queued_requests); retry later",
                close=not self.keep_alive,
            )

    # ---------------------------------------------------------------- writing (any thread)

    def respond(self, status: int, body: bytes, close: bool, head_only: bool = False) -> None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = ""
        content_type = getattr(body, "content_type", "application/json")  # the Prometheus page is text/plain
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        ).encode("latin-1")
        with self.lock:
            if self.closed:
                return
            self.send_locked([head] if head_only else [head, body])
            self.job = None
            now = time.monotonic()
            if close or not self.keep_alive:
                self._close_gracefully(now)
                return
            self.state = _HEAD
            self.started = None
            self.idle_since = now
            self.deadline = min(self.deadline, now + self.server.timeout_s)
            self._new_request()
            if self.buffer or not self.want_read:
                self.loop.call_soon(self._resume)

    def _resume(self) -> None:
        with self.lock:
            if self.closed or self.lingering:
                return
            self.want_read = True
            if self.buffer:
                self.started = time.monotonic()
                try:
                    self._advance()
                except _Refusal as refusal:
                    self._refuse(refusal.status, str(refusal))
        self.loop.update(self)

    def _refuse(self, status: int, message: str, close: bool = True) -> None:
        log_level = logging.DEBUG if status == 408 else logging.INFO
        quiet_log(log_level, f"REST {status}", "REST request from %s refused with %d: %s", self.peer, status, message)
        self.respond(status, orjson.dumps({"error": message}), close)

    def _close_gracefully(self, now: float) -> None:
        """Close after the answer: our side first, then what the client still sends is dropped for DRAIN_S.

        A client still sending would otherwise get a reset, and lose the answer, if the
        socket closed with its data unread.
        """
        self.lingering = True
        self.want_read = True
        self.deadline = now + DRAIN_S
        if self.out:
            self.close_after_flush = True
        else:
            self.shut_write()
        self.loop.update_soon(self)

    def on_flushed(self) -> None:
        if self.close_after_flush:
            self.close_after_flush = False
            self.shut_write()

    def release(self) -> None:
        with self.lock:
            if self.reserved:
                self.limits.budget.release(self.reserved)
                self.reserved = 0

    # ---------------------------------------------------------------- time and the loop's questions

    def on_deadline(self, now: float) -> None:
        with self.lock:
            if self.lingering and not self.out:
                self.closed = True
                return
            if self.write_stalled(now):
                return
            upcoming = FOREVER if self.out_since is None else self.out_since + self.server.timeout_s
            if self.state != _BUSY and not self.lingering:
                if self.started is not None:
                    limit = self.started + self.server.timeout_s
                    if not self.requests:
                        limit = min(limit, self.accepted + self.limits.handshake_timeout_s)
                    if now >= limit:
                        self._refuse(
                            408,
                            f"the request did not arrive whole within {self.server.timeout_s:.1f} s "
                            "(--rest_api_timeout_in_ms)",
                        )
                        return
                    upcoming = min(upcoming, limit)
                else:
                    limit = (
                        self.accepted + self.limits.handshake_timeout_s
                        if not self.requests
                        else self.idle_since + self.server.timeout_s
                    )
                    if now >= limit:
                        self.closed = True  # an idle connection: TF Serving closes it silently too
                        return
                    upcoming = min(upcoming, limit)
            elif self.lingering:
                upcoming = min(upcoming, now + DRAIN_S)
            self.deadline = upcoming

    def evictable(self) -> bool:
        return self.state != _BUSY and not self.out

    def on_closed(self) -> None:
        job = self.job
        if job is not None and self.server.pool.cancel(job):
            job.release()
        self.release()


def start_rest_server(
    core: ServingCore,
    host: str,
    port: int,
    num_threads: int,
    timeout_ms: int,
    max_request_bytes: int,
    limits: Limits | None = None,
) -> RestServer:
    """Bind and serve on a background thread; raise ServeprofError if the port cannot be had."""
    api = RestApi(core, num_threads)
    try:
        return RestServer(api, host, port, num_threads, timeout_ms / 1000.0, max_request_bytes, limits or Limits())
    except OSError as error:
        raise bind_error(host, port, "--rest_api_port", error) from None
