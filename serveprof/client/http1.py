"""HTTP/1.1 requests on one keep-alive connection, with as little client work as possible.

The REST client's timed POST goes through this. ``http.client`` spent about 0.2 ms of
the calling thread's CPU per request on this 2-core machine, most of it parsing the
response headers through ``email.parser``; here a request is one ``sendmsg`` of a
formatted head and the caller's body (no copy), and the response head is split by
hand: the status, Content-Length or chunked Transfer-Encoding, and Connection.

A kept-alive connection that the server closed while idle (TF Serving and serveprof
serve close it after ``--rest_api_timeout_in_ms``) fails on its next use before any
answer arrives; that request is sent once more on a new connection.

Where a server can break it, the response is framed as RFC 9112 §6.3 says: a
Transfer-Encoding overrides Content-Length (and the connection is not reused), a
response whose last transfer coding is not chunked runs until the server closes,
conflicting Content-Lengths and malformed chunk sizes are errors. An exchange has one
deadline, ``timeout_s``, however the server spreads its bytes.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time

from serveprof.wire.sockets import close_quietly, send_all

MAX_HEAD_BYTES = 64 * 1024
MAX_TRAILER_BYTES = 64 * 1024
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)


class HttpProtocolError(OSError):
    """The server's answer is not HTTP/1.1 this client can read."""


class _StaleConnection(Exception):
    """A reused connection failed before the server answered anything."""


class Http1Connection:
    def __init__(self, host: str, port: int, *, tls: bool = False, timeout_s: float | None = None):
        self.host, self.port, self.tls, self.timeout_s = host, port, tls, timeout_s
        self._host_header = (f"[{host}]" if ":" in host else host) + f":{port}"
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._position = 0
        self._reused = False
        self._deadline = float("inf")
        self._lock = threading.Lock()

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> tuple[int, bytes]:
        """Send one request and return ``(status, body)``; raises OSError (TimeoutError included)."""
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        head = (head + "\r\n").encode("latin-1")
        with self._lock:
            try:
                return self._exchange(head, body)
            except _StaleConnection:
                self.close()
                try:
                    return self._exchange(head, body)
                except _StaleConnection as error:
                    raise ConnectionResetError(str(error)) from None
            except BaseException:
                self.close()
                raise

    def connect(self) -> None:
        """Open the connection now rather than with the next request."""
        with self._lock:
            if self._sock is None:
                self._connect()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        self._buffer.clear()
        self._position = 0
        close_quietly(sock)

    def __enter__(self) -> Http1Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        self._sock = sock
        self._reused = False

    def _exchange(self, head: bytes, body: bytes | None) -> tuple[int, bytes]:
        if self._sock is None:
            self._connect()
        reused = self._reused
        self._deadline = time.monotonic() + self.timeout_s if self.timeout_s is not None else float("inf")
        try:
            self._send(head, body)
            status, headers = self._read_head()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, EOFError) as error:
            if reused and not self._answer_started:
                raise _StaleConnection(f"{type(error).__name__}: {error}") from None
            raise ConnectionResetError(f"the server closed the connection: {error}") from None
        payload = self._read_body(headers)
        self._reused = True
        if (
            headers.get("connection", "").lower() == "close"
            or self._sock is None
            or "transfer-encoding" in headers
            and "content-length" in headers
        ):
            self.close()
        return status, payload

    def _send(self, head: bytes, body: bytes | None) -> None:
        self._answer_started = False
        send_all(self._sock, [head, body] if body else [head])

    # ------------------------------------------------------------------- reading

    def _fill(self) -> None:
        buffer = self._buffer
        if self._position:
            del buffer[: self._position]
            self._position = 0
        if time.monotonic() > self._deadline:
            raise TimeoutError(f"no whole answer within {self.timeout_s} s")
        chunk = self._sock.recv(262_144)
        if not chunk:
            raise EOFError("the server closed the connection")
        self._answer_started = True
        buffer += chunk

    def _read_line_block(self, terminator: bytes, limit: int) -> bytes:
        while True:
            end = self._buffer.find(terminator, self._position)
            if end >= 0:
                block = bytes(self._buffer[self._position : end])
                self._position = end + len(terminator)
                return block
            if len(self._buffer) - self._position > limit:
                raise HttpProtocolError(f"no end of the response head within {limit} bytes")
            self._fill()

    def _read_exact(self, count: int) -> bytes:
        while len(self._buffer) - self._position < count:
            self._fill()
        data = bytes(self._buffer[self._position : self._position + count])
        self._position += count
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while True:
            lines = self._read_line_block(b"\r\n\r\n", MAX_HEAD_BYTES).decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise HttpProtocolError(f"malformed response header line: {line[:100]!r}")
                name, value = name.strip().lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value  # RFC 9110 §5.3
            if version == "HTTP/1.0" and headers.get("connection", "").lower() != "keep-alive":
                headers["connection"] = "close"
            if not code.startswith("1"):  # 1xx answers are interim: the real one follows
                return int(code), headers

    def _read_body(self, headers: dict[str, str]) -> bytes:
        codings = headers.get("transfer-encoding")
        if codings is not None:
            if [name.strip().lower() for name in codings.split(",")][-1] == "chunked":
                return self._read_chunked()
            return self._read_to_close()
        length = headers.get("content-length")
        if length is not None:
            values = {value.strip() for value in length.split(",")}
            if len(values) != 1 or not _DECIMAL.fullmatch(next(iter(values))):
                raise HttpProtocolError(f"bad Content-Length {length[:40]!r}")
            return self._read_exact(int(values.pop()))
        return self._read_to_close()

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size_line = self._read_line_block(b"\r\n", 1024).split(b";", 1)[0].strip(b" \t")
            if not _CHUNK_SIZE.fullmatch(size_line):
                raise HttpProtocolError(f"bad chunk size {size_line[:40]!r}")
            size = int(size_line, 16)
            if size == 0:
                trailers = 0
                while line := self._read_line_block(b"\r\n", MAX_HEAD_BYTES):  # trailer fields, then an empty line
                    trailers += len(line) + 2
                    if trailers > MAX_TRAILER_BYTES:
                        raise HttpProtocolError(f"trailer fields over {MAX_TRAILER_BYTES} bytes")
                return b"".join(parts)
            parts.append(self._read_exact(size))
            if self._read_exact(2) != b"\r\n":
                raise HttpProtocolError("a chunk does not end with CRLF")

    def _read_to_close(self) -> bytes:
        """Neither framing: the body runs until the server closes the connection."""
        parts = [bytes(self._buffer[self._position :])]
        self._buffer.clear()
        self._position = 0
        while True:
            if time.monotonic() > self._deadline:
                raise TimeoutError(f"no whole answer within {self.timeout_s} s")
            chunk = self._sock.recv(262_144)
            if not chunk:
                break
            parts.append(chunk)
        self.close()
        return b"".join(parts)
