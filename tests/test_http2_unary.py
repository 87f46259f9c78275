"""The lean HTTP/2 transport of the timed gRPC call, against real servers.

A real grpcio server (gRPC's C core, the same HTTP/2 stack as TF Serving's) answers
most tests: same bytes as grpcio's own client, flow control on large messages, status
codes and messages, deadlines, GOAWAY and a killed connection. A scripted HTTP/2 peer
on a loopback socket sends what grpcio never does but a server may: padded frames,
header blocks split over CONTINUATION frames, PINGs, SETTINGS changes mid-call, a
trailers-only error and an HTTP error status.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from hpack import Encoder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serveprof.client.http2_unary import GrpcCallError, UnaryChannel, grpc_timeout_header, parse_target
from serveprof.wire.http2 import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    RST_STREAM,
    SETTINGS,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    hpack_int,
)

ECHO, FAIL, SLOW, LENGTH = "/t.Echo/Echo", "/t.Echo/Fail", "/t.Echo/Slow", "/t.Echo/Length"


def _echo_handlers():
    def fail(request, context):
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode("utf-8"))

    def slow(request, context):
        time.sleep(float(request.decode()))
        return b"late"

    return grpc.method_handlers_generic_handler(
        "t.Echo",
        {
            "Echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request),
            "Fail": grpc.unary_unary_rpc_method_handler(fail),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
            "Length": grpc.unary_unary_rpc_method_handler(lambda request, context: str(len(request)).encode()),
        },
    )


def start_grpc_server(port: int = 0, **options) -> tuple[grpc.Server, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=list(options.items()))
    server.add_generic_rpc_handlers((_echo_handlers(),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, bound


@pytest.fixture(scope="module")
def grpc_server():
    # gRPC's defaults for everything but the message size: 64 KiB initial windows and
    # 16 KiB frames, so a large message needs many frames and WINDOW_UPDATEs.
    server, port = start_grpc_server(**{"grpc.max_receive_message_length": 64 << 20})
    yield f"127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture
def channel(grpc_server):
    made = UnaryChannel(grpc_server, timeout_s=30)
    yield made
    made.close()


# ------------------------------------------------------------------ the encodings


def test_hpack_integers_match_rfc7541_examples():
    assert hpack_int(10, 5) == bytes([0x0A])  # C.1.1
    assert hpack_int(1337, 5) == bytes([0x1F, 0x9A, 0x0A])  # C.1.2
    assert hpack_int(42, 8) == bytes([0x2A])  # C.1.3


def test_grpc_timeout_fits_eight_digits():
    assert grpc_timeout_header(0.0001) == b"1m"
    assert grpc_timeout_header(600) == b"600000m"
    assert grpc_timeout_header(200_000) == b"200000S"  # 200,000,000 ms has nine digits
    assert len(grpc_timeout_header(10**12).rstrip(b"mSMH")) <= 8


@pytest.mark.parametrize(
    "target, expected",
    [("127.0.0.1:8500", ("127.0.0.1", 8500)), ("localhost:1", ("localhost", 1)), ("[::1]:8500", ("::1", 8500))],
)
def test_targets_host_port(target, expected):
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["dns:///localhost:8500", "unix:/tmp/s", "::1:8500", "localhost", ":8500", "h:p"])
def test_other_target_forms_are_refused(target):
    with pytest.raises(ValueError):
        parse_target(target)


# ------------------------------------------------------------ against grpcio's server


def test_answers_are_grpcios_bytes(channel, grpc_server):
    with grpc.insecure_channel(grpc_server) as reference:
        echo = reference.unary_unary(ECHO)
        for message in (b"", b"x", bytes(range(256)) * 40):
            assert channel.call(ECHO, message) == echo(message) == message


@pytest.mark.parametrize("size", [65_535 - 5, 65_535 - 4, 1 << 20, 20 << 20])
def test_large_messages_respect_flow_control(channel, size):
    # Past the 64 KiB windows the client must wait for WINDOW_UPDATEs; sending beyond
    # them would make the server reset the stream with FLOW_CONTROL_ERROR.
    message = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    assert channel.call(LENGTH, message) == str(size).encode()
    assert channel.call(ECHO, message[:100_000]) == message[:100_000]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300_000))
def test_any_message_round_trips(channel, message):
    assert channel.call(ECHO, message) == message


def test_status_and_message_come_from_the_trailers(channel):
    with pytest.raises(GrpcCallError) as raised:
        channel.call(FAIL, "no such model: 100% ünïcode\nsecond line".encode())
    assert raised.value.code == "NOT_FOUND"
    assert raised.value.details == "no such model: 100% ünïcode\nsecond line"
    assert channel.call(ECHO, b"still usable") == b"still usable"


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(GrpcCallError) as raised:
        channel.call("/t.Echo/Nope", b"x")
    assert raised.value.code == "UNIMPLEMENTED"


def test_message_over_the_servers_limit_is_resource_exhausted(channel):
    with pytest.raises(GrpcCallError) as raised:
        channel.call(LENGTH, b"\0" * ((64 << 20) + 1))
    assert raised.value.code == "RESOURCE_EXHAUSTED"
    assert channel.call(ECHO, b"after") == b"after"


def test_deadline_exceeded_then_the_next_call_works(grpc_server):
    with UnaryChannel(grpc_server, timeout_s=0.5) as quick:
        started = time.monotonic()
        with pytest.raises(GrpcCallError) as raised:
            quick.call(SLOW, b"3")
        assert raised.value.code == "DEADLINE_EXCEEDED"
        assert time.monotonic() - started < 2.5
        assert quick.call(ECHO, b"fresh connection") == b"fresh connection"


def test_server_gone_is_unavailable_and_a_restarted_one_is_reached():
    server, port = start_grpc_server()
    channel = UnaryChannel(f"127.0.0.1:{port}", timeout_s=10)
    try:
        assert channel.call(ECHO, b"1") == b"1"
        server.stop(None).wait(5)  # grpcio sends GOAWAY and closes
        with pytest.raises(GrpcCallError) as raised:
            channel.call(ECHO, b"2")
        assert raised.value.code == "UNAVAILABLE"
        server, _ = start_grpc_server(port)
        assert channel.call(ECHO, b"3") == b"3"
    finally:
        channel.close()
        server.stop(None)


def test_one_call_at_a_time_from_many_threads(channel):
    results: list[bytes] = []

    def worker(index: int) -> None:
        for round_ in range(20):
            message = f"{index}-{round_}".encode() * (index + 1)
            results.append(channel.call(ECHO, message) == message)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [True] * 120


# ------------------------------------------------------------- a scripted HTTP/2 peer


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream) + payload


class ScriptedPeer:
    """Accepts one connection, reads one request, then sends whatever ``respond`` returns."""

    def __init__(self, respond):
        self.respond = respond
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.request_frames: list[tuple[int, int, int, bytes]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            assert self._read(conn, len(PREFACE)) == PREFACE
            conn.sendall(_frame(SETTINGS, 0, 0))
            while True:
                header = self._read(conn, 9)
                length, kind, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
                stream = int.from_bytes(header[5:], "big")
                payload = self._read(conn, length)
                self.request_frames.append((kind, flags, stream, payload))
                if kind in (DATA, HEADERS) and flags & FLAG_END_STREAM:
                    break
            conn.sendall(self.respond(stream))
            conn.settimeout(5)
            try:  # what the client sends after the answer (ACKs) until it closes the connection
                while True:
                    header = self._read(conn, 9)
                    payload = self._read(conn, int.from_bytes(header[:3], "big"))
                    self.request_frames.append((header[3], header[4], int.from_bytes(header[5:], "big"), payload))
            except (EOFError, OSError):
                pass

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def _block(*fields: tuple[str, str]) -> bytes:
    return Encoder().encode(list(fields))


def _message(payload: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(payload)) + payload


def test_padded_continued_pinged_answer_is_read():
    def respond(stream: int) -> bytes:
        headers = _block((":status", "200"), ("content-type", "application/grpc"))
        trailers = _block(("grpc-status", "0"), ("grpc-message", ""))
        body = _message(b"hello world")
        pad = 7
        return b"".join(
            [
                _frame(SETTINGS, 0, 0, struct.pack(">HI", 5, 1 << 20)),
                _frame(PING, 0, 0, b"12345678"),
                _frame(HEADERS, 0, stream, headers[:2]),
                _frame(CONTINUATION, FLAG_END_HEADERS, stream, headers[2:]),
                _frame(DATA, FLAG_PADDED, stream, bytes([pad]) + body[:8] + b"\0" * pad),
                _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1000)),
                _frame(DATA, 0, stream, body[8:]),
                _frame(HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS | FLAG_PADDED, stream, b"\x02" + trailers + b"\0\0"),
            ]
        )

    peer = ScriptedPeer(respond)
    with UnaryChannel(peer.target, timeout_s=10) as channel:
        assert channel.call("/a.B/C", b"request") == b"hello world"
    peer.thread.join(5)
    kinds = [(kind, flags) for kind, flags, _, _ in peer.request_frames]
    assert (PING, FLAG_ACK) in kinds and (SETTINGS, FLAG_ACK) in kinds  # both answered


def test_request_headers_are_grpcs():
    peer = ScriptedPeer(
        lambda stream: _frame(
            HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream, _block((":status", "200"), ("grpc-status", "0"))
        )
    )
    with UnaryChannel(peer.target, timeout_s=7) as channel:
        with pytest.raises(GrpcCallError):  # status OK but no message: refused
            channel.call("/tensorflow.serving.PredictionService/Predict", b"abc")
    peer.thread.join(5)
    from hpack import Decoder

    headers_frame = next(payload for kind, _, _, payload in peer.request_frames if kind == HEADERS)
    headers = dict(Decoder().decode(headers_frame))
    assert headers == {
        ":method": "POST",
        ":scheme": "http",
        ":path": "/tensorflow.serving.PredictionService/Predict",
        ":authority": peer.target,
        "content-type": "application/grpc",
        "te": "trailers",
        "user-agent": "serveprof",
        "grpc-timeout": "7000m",
    }
    data = b"".join(payload for kind, _, _, payload in peer.request_frames if kind == DATA)
    assert data == _message(b"abc")


def test_trailers_only_error_and_http_status():
    peer = ScriptedPeer(
        lambda stream: _frame(
            HEADERS,
            FLAG_END_STREAM | FLAG_END_HEADERS,
            stream,
            _block((":status", "200"), ("grpc-status", "3"), ("grpc-message", "bad%20input%3A%20%C3%BC")),
        )
    )
    with UnaryChannel(peer.target, timeout_s=10) as channel, pytest.raises(GrpcCallError) as raised:
        channel.call("/a.B/C", b"x")
    assert (raised.value.code, raised.value.details) == ("INVALID_ARGUMENT", "bad input: ü")

    peer = ScriptedPeer(
        lambda stream: _frame(HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream, _block((":status", "503")))
    )
    with UnaryChannel(peer.target, timeout_s=10) as channel, pytest.raises(GrpcCallError) as raised:
        channel.call("/a.B/C", b"x")
    assert raised.value.code == "UNAVAILABLE" and "503" in raised.value.details


def test_goaway_before_the_stream_is_unavailable():
    peer = ScriptedPeer(lambda stream: _frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"shutting down"))
    with UnaryChannel(peer.target, timeout_s=10) as channel, pytest.raises(GrpcCallError) as raised:
        channel.call("/a.B/C", b"x")
    assert raised.value.code == "UNAVAILABLE" and "shutting down" in raised.value.details


def test_a_compressed_answer_is_refused():
    peer = ScriptedPeer(
        lambda stream: b"".join(
            [
                _frame(HEADERS, FLAG_END_HEADERS, stream, _block((":status", "200"))),
                _frame(DATA, 0, stream, b"\x01" + struct.pack(">I", 3) + b"abc"),
                _frame(HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream, _block(("grpc-status", "0"))),
            ]
        )
    )
    with UnaryChannel(peer.target, timeout_s=10) as channel, pytest.raises(GrpcCallError) as raised:
        channel.call("/a.B/C", b"x")
    assert raised.value.code == "INTERNAL" and "compressed" in raised.value.details


def test_connect_finishes_the_handshake_before_the_first_request():
    peer = ScriptedPeer(
        lambda stream: _frame(
            HEADERS,
            FLAG_END_STREAM | FLAG_END_HEADERS,
            stream,
            _block((":status", "200"), ("grpc-status", "5"), ("grpc-message", "x")),
        )
    )
    with UnaryChannel(peer.target, timeout_s=10) as channel:
        channel.connect()
        channel.connect()  # a second connect keeps the connection
        with pytest.raises(GrpcCallError):
            channel.call("/a.B/C", b"x")
    peer.thread.join(5)
    kinds = [(kind, flags) for kind, flags, _, _ in peer.request_frames]
    assert kinds[:4] == [(SETTINGS, 0), (WINDOW_UPDATE, 0), (SETTINGS, FLAG_ACK), (HEADERS, FLAG_END_HEADERS)]


def test_connect_to_a_silent_server_times_out():
    listener = socket.create_server(("127.0.0.1", 0))  # accepts, never speaks HTTP/2
    with UnaryChannel(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.3) as channel:
        with pytest.raises(GrpcCallError) as raised:
            channel.connect()
    assert raised.value.code == "DEADLINE_EXCEEDED"
    listener.close()


def test_connect_to_nothing_is_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        with UnaryChannel(f"127.0.0.1:{port}", timeout_s=5) as channel, pytest.raises(GrpcCallError) as raised:
            channel.connect()
    assert raised.value.code == "UNAVAILABLE"


# ------------------------------------------------------- a server that breaks RFC 9113


def _ok_answer(stream: int, body: bytes = b"fine") -> bytes:
    return b"".join(
        [
            _frame(HEADERS, FLAG_END_HEADERS, stream, _block((":status", "200"))),
            _frame(DATA, 0, stream, _message(body)),
            _frame(HEADERS, FLAG_END_STREAM | FLAG_END_HEADERS, stream, _block(("grpc-status", "0"))),
        ]
    )


@pytest.mark.parametrize(
    "breakage, words",
    [
        (lambda stream: _frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1)), "past 2^31-1"),
        (lambda stream: _frame(DATA, 0, stream + 2, b"unasked"), "never opened"),
        (
            lambda stream: (
                _frame(HEADERS, 0, stream, _block((":status", "200"))) + _frame(CONTINUATION, 0, stream, b"") * 40
            ),
            "CONTINUATION",
        ),
        (lambda stream: _frame(SETTINGS, 0, 0, b"12345"), "multiple of 6"),
        (lambda stream: _frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 1 << 31)), "2^31-1"),
    ],
    ids=["window overflow", "unknown stream", "continuation flood", "settings length", "settings window"],
)
def test_a_server_that_breaks_http2_fails_the_call(breakage, words):
    peer = ScriptedPeer(lambda stream: breakage(stream) + _ok_answer(stream))
    with UnaryChannel(peer.target, timeout_s=5) as channel, pytest.raises(GrpcCallError) as raised:
        channel.call("/a.B/C", b"x")
    assert raised.value.code == "INTERNAL" and words in raised.value.details


def test_data_on_a_finished_stream_is_answered_stream_closed():
    peer = ScriptedPeer(
        lambda stream: _ok_answer(stream) + _frame(DATA, 0, stream, b"late") + _frame(PING, 0, 0, b"p" * 8)
    )
    with UnaryChannel(peer.target, timeout_s=1) as channel:
        assert channel.call("/a.B/C", b"x") == b"fine"
        with pytest.raises(GrpcCallError):
            channel.call("/a.B/C", b"y")  # reads the late DATA (and the PING) while waiting; the peer then hangs up
    peer.thread.join(5)
    assert (RST_STREAM, 0, 1, struct.pack(">I", STREAM_CLOSED)) in peer.request_frames


def test_a_server_that_trickles_pings_meets_the_calls_deadline():
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(_frame(SETTINGS, 0, 0))
            for _ in range(30):
                try:
                    conn.sendall(_frame(PING, 0, 0, b"12345678"))
                except OSError:
                    return
                time.sleep(0.1)

    threading.Thread(target=trickle, daemon=True).start()
    started = time.monotonic()
    with UnaryChannel(f"127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.6) as channel:
        with pytest.raises(GrpcCallError) as raised:
            channel.call("/a.B/C", b"x")
    assert raised.value.code == "DEADLINE_EXCEEDED" and time.monotonic() - started < 2
    listener.close()
