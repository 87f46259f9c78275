"""The HTTP/1.1 server that carries TF Serving's REST API (``rest_api.RestApi``).

A body larger than --max_request_bytes is refused with 413 from its Content-Length
alone, before any of it is read. Each connection has its own thread (keep-alive
connections stay open between requests); at most --rest_api_num_threads of them
decode, predict and encode at once.
"""

from __future__ import annotations

import logging
import re
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import orjson

from serveprof.server.bind_errors import bind_error
from serveprof.server.core import ServingCore
from serveprof.server.rest_api import RestApi

log = logging.getLogger("serveprof.serve")

_DRAIN_SECONDS = 2.0
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)  # str.isdigit would also take "¹" and "٣"
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "serveprof-embedded"
    api: RestApi  # set on the per-server subclass
    max_body: int

    def setup(self) -> None:
        super().setup()
        # Without this, Nagle's algorithm can hold a small response back by 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.debug("REST %s", format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, header too long) as JSON like the rest.
        self.close_connection = True
        self._respond(code, orjson.dumps({"error": message or explain or "bad request"}))

    def _respond(self, status: int, body: bytes, close: bool = False) -> None:
        reason = self.responses.get(status, ("",))[0]
        close = close or self.close_connection
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n")
        payload = head.encode("latin-1") + (b"" if self.command == "HEAD" else body)
        self.wfile.write(payload)  # one write: headers and body in the same segment
        if close:
            self.close_connection = True

    def _body(self) -> bytes | None:
        """The request body, or None when an answer has already been sent."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked_body()
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        if not _DECIMAL.fullmatch(declared.strip()):
            self._respond(400, orjson.dumps({"error": f"Content-Length {declared[:40]!r} is not a number"}), close=True)
            return None
        digits = declared.strip().lstrip("0") or "0"
        length = int(digits) if len(digits) <= 18 else self.max_body + 1  # more digits than any cap: too large
        if length > self.max_body:
            self._refuse_oversized(length)
            return None
        body = self.rfile.read(length)
        if len(body) != length:  # the client went away mid-body
            self.close_connection = True
            return None
        return body

    def _chunked_body(self) -> bytes | None:
        parts, total = [], 0
        while True:
            size_line = self.rfile.readline(1024).split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_line):  # int(x, 16) alone would take "-1", "+1" and "1_0"
                self._respond(400, orjson.dumps({"error": f"malformed chunked body: chunk size {size_line[:20]!r}"}),
                              close=True)
                return None
            size = int(size_line, 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_body:
                self._refuse_oversized(total)
                return None
            parts.append(self.rfile.read(size))
            if len(parts[-1]) != size or self.rfile.readline(8) != b"\r\n":
                self._respond(400, orjson.dumps({"error": "malformed chunked body: a chunk is cut short or does not "
                                                          "end with CRLF"}), close=True)
                return None

    def _refuse_oversized(self, length: int) -> None:
        message = (f"Request body of {length} bytes is larger than --max_request_bytes={self.max_body}; "
                   "send a smaller batch or start the server with a larger --max_request_bytes")
        self._respond(413, orjson.dumps({"error": message}), close=True)
        # Lingering close: a client still sending would get a reset (and lose this answer)
        # if the socket closed with its data unread; discard what arrives for a moment.
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(0.5)
            deadline = time.monotonic() + _DRAIN_SECONDS
            while time.monotonic() < deadline and self.connection.recv(1 << 16):
                pass
        except OSError:
            pass

    def _dispatch(self) -> None:
        with self.api.request_in_flight():
            body = self._body()
            if body is None:
                return
            status, payload = self.api.handle(self.command, self.path.split("?", 1)[0], body)
            self._respond(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


class _ThreadingServer(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    block_on_close = False  # shutdown must not wait for idle keep-alive connections

    def handle_error(self, request, client_address) -> None:
        # A client that hangs up mid-answer is routine; keep it out of the log unless debugging.
        log.debug("REST connection from %s ended with an error", client_address, exc_info=True)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host name up (getfqdn), which can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def start_rest_server(core: ServingCore, host: str, port: int, num_threads: int, timeout_ms: int,
                      max_request_bytes: int) -> _ThreadingServer:
    """Bind and serve on a background thread; raise ServeprofError if the port cannot be had."""
    api = RestApi(core, num_threads)
    handler = type("RestHandler", (_Handler,), {"api": api, "max_body": max_request_bytes, "timeout": timeout_ms / 1000.0})
    server_class = type("RestServer", (_ThreadingServer,), {
        "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
    try:
        server = server_class((host, port), handler)
    except OSError as error:
        raise bind_error(host, port, "--rest_api_port", error) from None
    server.api = api
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="rest", daemon=True).start()
    return server
