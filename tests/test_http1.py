"""The REST client's HTTP/1.1 connection against scripted servers on loopback sockets.

The embedded server's own answers are covered by tests/test_client.py; these cover
what other servers may send: chunked bodies, a body that runs to the close, an
interim 100, HTTP/1.0, ``Connection: close``, a stale kept-alive connection, answers
that are not HTTP, large bodies, and TLS.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading

import pytest

from serveprof.client.http1 import Http1Connection, HttpProtocolError


class ScriptedHttpServer:
    """Answers the n-th request with ``answers[n]``; ``None`` closes the connection instead."""

    def __init__(self, answers, tls_context: ssl.SSLContext | None = None, close_after_each: bool = False):
        self.answers = list(answers)
        self.tls_context = tls_context
        self.close_after_each = close_after_each
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.answers:
            conn, _ = self.listener.accept()
            self.connections += 1
            if self.tls_context is not None:
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            with conn:
                reader = conn.makefile("rb")
                while self.answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = reader.readline()
                        if not line:
                            break
                        head += line
                    if not head:
                        break
                    length = next(
                        (
                            int(line.split(b":")[1])
                            for line in head.split(b"\r\n")
                            if line.lower().startswith(b"content-length")
                        ),
                        0,
                    )
                    self.requests.append((head, reader.read(length)))
                    answer = self.answers.pop(0)
                    if answer is None:
                        break
                    conn.sendall(answer)
                    if self.close_after_each:
                        break
                reader.close()
                conn.shutdown(socket.SHUT_RDWR)  # the client sees the close now

    def connection(self, **options) -> Http1Connection:
        return Http1Connection("127.0.0.1", self.port, timeout_s=10, **options)


def test_content_length_body_and_keep_alive():
    server = ScriptedHttpServer(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b'HTTP/1.1 404 Not Found\r\ncontent-length: 17\r\n\r\n{"error": "nope"}',
        ]
    )
    with server.connection() as connection:
        assert connection.request("POST", "/v1/models/m:predict", b'{"instances": [1]}') == (200, b"hello")
        assert connection.request("GET", "/v1/models/x") == (404, b'{"error": "nope"}')
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/models/m:predict HTTP/1.1\r\n")
    assert b"Content-Length: 18\r\n" in head and b"Content-Type: application/json\r\n" in head
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert body == b'{"instances": [1]}'


def test_chunked_body_with_extensions_and_trailers():
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nabcd\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    server = ScriptedHttpServer([answer, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    with server.connection() as connection:
        assert connection.request("GET", "/") == (200, b"abcd0123456789abcdef")
        assert connection.request("GET", "/") == (200, b"ok")  # the connection was left at the next answer
    assert server.connections == 1


def test_interim_100_is_skipped_and_http10_closes():
    server = ScriptedHttpServer(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the end",
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\ny",
        ],
        close_after_each=True,
    )
    with server.connection() as connection:
        assert connection.request("GET", "/") == (200, b"to the end")
        assert connection.request("GET", "/") == (200, b"x")
        assert connection.request("GET", "/") == (200, b"y")
    assert server.connections == 3


def test_a_stale_kept_alive_connection_is_retried_once():
    # The second request finds the connection closed by the server (None) and is sent
    # again on a new one.
    server = ScriptedHttpServer(
        [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", None, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"]
    )
    with server.connection() as connection:
        assert connection.request("POST", "/p", b"1") == (200, b"a")
        assert connection.request("POST", "/p", b"2") == (200, b"b")
    assert [body for _, body in server.requests] == [b"1", b"2", b"2"]
    assert server.connections == 2


def test_a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry():
    server = ScriptedHttpServer([None])
    with server.connection() as connection, pytest.raises(ConnectionResetError):
        connection.request("POST", "/p", b"1")
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "answer, words",
    [
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nabcd", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000, "response head"),
    ],
)
def test_answers_that_are_not_http_are_refused(answer, words):
    server = ScriptedHttpServer([answer])
    with server.connection() as connection, pytest.raises(HttpProtocolError, match=words):
        connection.request("GET", "/")


def test_transfer_encoding_overrides_content_length_and_the_connection_is_not_reused():
    server = ScriptedHttpServer(
        [
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
        ]
    )
    with server.connection() as connection:
        assert connection.request("GET", "/") == (200, b"ok")  # RFC 9112 §6.3: chunked wins over Content-Length
        assert connection.request("GET", "/") == (200, b"hi")
    assert server.connections == 2


def test_a_body_with_a_coding_that_is_not_chunked_runs_to_the_close():
    server = ScriptedHttpServer(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot chunked"], close_after_each=True
    )
    with server.connection() as connection:
        assert connection.request("GET", "/") == (200, b"not chunked")


def test_a_server_that_trickles_its_answer_meets_the_deadline():
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(1000)
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(40):  # a byte of trailer now and then, never the end
                try:
                    conn.sendall(b"0\r\n" if _ == 0 else b"x")
                except OSError:
                    return
                threading.Event().wait(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    with Http1Connection("127.0.0.1", listener.getsockname()[1], timeout_s=0.5) as connection:
        with pytest.raises(TimeoutError):
            connection.request("GET", "/")
    listener.close()


def test_large_bodies_both_ways():
    big = bytes(range(256)) * (40 << 12)  # 40 MiB: more than one socket buffer, so sends are partial
    server = ScriptedHttpServer([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big])
    with server.connection() as connection:
        status, body = connection.request("POST", "/p", big)
    assert status == 200 and body == big
    assert server.requests[0][1] == big


def test_timeout_raises_timeout_error():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (backlog) but never answers
    with Http1Connection("127.0.0.1", listener.getsockname()[1], timeout_s=0.3) as connection:
        with pytest.raises(TimeoutError):
            connection.request("GET", "/")
    listener.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https(tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts it as its CA
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ScriptedHttpServer([b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret"], tls_context=context)
    with server.connection(tls=True) as connection:
        assert connection.request("POST", "/p", b"tls body") == (200, b"secret")
    assert server.requests[0][1] == b"tls body"
