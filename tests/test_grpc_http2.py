"""The embedded server's gRPC transport (serveprof.server.grpc_http2) with real clients.

grpcio's own client (the C core TF Serving's users run) and serveprof's lean client
call it over loopback; raw sockets break HTTP/2 on purpose. The model server on top of
it is tested through the official stubs in tests/test_server_api.py.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import grpc
import pytest
from hpack import Encoder

from serveprof.client.http2_unary import GrpcCallError, UnaryChannel
from serveprof.server.grpc_http2 import GrpcServer
from serveprof.wire.http2 import (DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_SIZE_ERROR, GOAWAY, HEADERS,
                                  PING, PREFACE, PROTOCOL_ERROR, COMPRESSION_ERROR, RST_STREAM, SETTINGS, CANCEL, CONTINUATION,
                                  FrameSocket, frame)
from serveprof.wire.status import Code, ServingError

LIMIT = 8 << 20


def _fail(request: bytes) -> bytes:
    raise ServingError(Code.NOT_FOUND, bytes(request).decode("utf-8"))


def _crash(request: bytes) -> bytes:
    raise KeyError("a bug")


def _slow(request: bytes) -> bytes:
    time.sleep(float(bytes(request).decode()))
    return b"done"


METHODS = {"/t.S/Echo": lambda request: request, "/t.S/Fail": _fail, "/t.S/Crash": _crash, "/t.S/Slow": _slow,
           "/t.S/Length": lambda request: str(len(request)).encode()}


@pytest.fixture
def server():
    made = GrpcServer(METHODS, "127.0.0.1", 0, max_workers=8, max_message_bytes=LIMIT)
    made.start()
    yield made
    made.stop(0)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                               options=[("grpc.max_send_message_length", -1),
                                        ("grpc.max_receive_message_length", -1)]) as made:
        yield made


def call(channel, method: str, request: bytes, **options):
    return channel.unary_unary(method)(request, timeout=30, **options)


def test_grpcio_client_gets_its_bytes_back(channel):
    for message in (b"", b"x", bytes(range(256)) * 100):
        assert call(channel, "/t.S/Echo", message) == message


@pytest.mark.parametrize("size", [70_000, 5 << 20])
def test_large_messages_both_ways_within_flow_control(channel, server, size):
    # grpcio's client starts with 64 KiB windows: a 5 MiB answer must wait for its updates.
    message = bytes(range(251)) * (size // 251)
    assert call(channel, "/t.S/Echo", message) == message
    with UnaryChannel(f"127.0.0.1:{server.port}", timeout_s=30) as lean:
        assert lean.call("/t.S/Echo", message) == message


def test_status_and_unicode_message(channel):
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "/t.S/Fail", "no such model: 100% ünïcode\nline two".encode())
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such model: 100% ünïcode\nline two"


def test_a_handler_bug_is_internal_and_the_server_goes_on(channel):
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "/t.S/Crash", b"")
    assert raised.value.code() == grpc.StatusCode.INTERNAL and "KeyError" in raised.value.details()
    assert call(channel, "/t.S/Echo", b"after") == b"after"


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "/t.S/Nope", b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "/t.S/Nope" in raised.value.details()


def test_message_over_the_limit_is_resource_exhausted(channel):
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "/t.S/Length", b"\0" * (LIMIT + 1))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"({LIMIT + 1} vs. {LIMIT})" in raised.value.details()
    assert call(channel, "/t.S/Length", b"\0" * LIMIT) == str(LIMIT).encode()


def test_compressed_request_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as raised:
        call(channel, "/t.S/Echo", b"z" * 1000, compression=grpc.Compression.Gzip)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_calls_on_one_connection_run_concurrently(channel):
    # grpcio multiplexes every call of a channel over one connection.
    results, started = [], time.monotonic()

    def one() -> None:
        results.append(call(channel, "/t.S/Slow", b"0.5"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == [b"done"] * 8
    assert time.monotonic() - started < 2.5  # 8 x 0.5 s one after another would take 4 s


def test_client_deadline_and_cancel_leave_the_server_serving(channel):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/t.S/Slow")(b"1", timeout=0.2)  # grpcio sends RST_STREAM(CANCEL)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.2)  # the handler finishes and finds its stream reset
    assert call(channel, "/t.S/Echo", b"ok") == b"ok"


def test_stop_lets_running_calls_finish_and_refuses_new_ones():
    server = GrpcServer(METHODS, "127.0.0.1", 0, max_workers=4, max_message_bytes=LIMIT)
    server.start()
    target = f"127.0.0.1:{server.port}"
    outcome = {}

    def slow_call() -> None:
        with UnaryChannel(target, timeout_s=10) as lean:
            outcome["slow"] = lean.call("/t.S/Slow", b"0.6")

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.2)
    started = time.monotonic()
    server.stop(2.0).wait(3)
    caller.join(5)
    assert outcome == {"slow": b"done"}
    assert time.monotonic() - started < 1.5  # stopped as soon as the call was done, not after the whole grace
    with pytest.raises(GrpcCallError) as raised, UnaryChannel(target, timeout_s=2) as late:
        late.call("/t.S/Echo", b"x")
    assert raised.value.code == "UNAVAILABLE"


def test_port_in_use_is_an_os_error():
    holder = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(OSError):
        GrpcServer(METHODS, "127.0.0.1", holder.getsockname()[1], max_workers=1, max_message_bytes=LIMIT)
    holder.close()


# ------------------------------------------------------------------ broken HTTP/2


def raw_connection(server) -> FrameSocket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    frames = FrameSocket(sock)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0))
    return frames


def read_until(frames: FrameSocket, kind: int) -> tuple[int, int, bytes]:
    while True:
        got, flags, stream, payload = frames.read_frame()
        if got == kind:
            return flags, stream, bytes(payload)


def goaway_code(frames: FrameSocket) -> int:
    _, _, payload = read_until(frames, GOAWAY)
    return struct.unpack(">I", payload[4:8])[0]


def request_block(path: str = "/t.S/Echo") -> bytes:
    return Encoder().encode([(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "x"),
                             ("content-type", "application/grpc"), ("te", "trailers")])


@pytest.mark.parametrize("breakage, code", [
    (frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),  # DATA on stream 0
    (frame(HEADERS, FLAG_END_HEADERS, 2, request_block()), PROTOCOL_ERROR),  # an even (server) stream id
    (frame(PING, 0, 0, b"short"), FRAME_SIZE_ERROR),
    (frame(SETTINGS, 0, 0, b"12345"), FRAME_SIZE_ERROR),
    (frame(HEADERS, FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), COMPRESSION_ERROR),  # no such HPACK index
    (frame(HEADERS, 0, 1, request_block()) + frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR),  # no CONTINUATION
    (frame(0x5, FLAG_END_HEADERS, 1, b"\0\0\0\2" + request_block()), PROTOCOL_ERROR),  # PUSH_PROMISE
])
def test_broken_http2_gets_goaway_and_others_are_still_served(server, channel, breakage, code):
    frames = raw_connection(server)
    frames.sock.sendall(breakage)
    assert goaway_code(frames) == code
    frames.sock.close()
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_not_http2_is_disconnected(server, channel):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    # Nothing but a GOAWAY(PROTOCOL_ERROR) comes back: the server speaks only after a valid preface.
    assert received[3] == GOAWAY and struct.unpack(">I", received[13:17])[0] == PROTOCOL_ERROR
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_an_oversized_header_block_is_refused(server, channel):
    frames = raw_connection(server)
    block = request_block()
    frames.sock.sendall(frame(HEADERS, 0, 1, block) + frame(CONTINUATION, 0, 1, b"\0" * 40_000)
                        + frame(CONTINUATION, FLAG_END_HEADERS, 1, b"\0" * 40_000))
    assert goaway_code(frames) == FRAME_SIZE_ERROR
    frames = raw_connection(server)
    frames.sock.sendall(frame(PING, 0, 0, b"\0" * 70_000))
    assert goaway_code(frames) == FRAME_SIZE_ERROR
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_ping_is_answered_and_a_reset_stream_is_not(server):
    frames = raw_connection(server)
    frames.sock.sendall(frame(PING, 0, 0, b"pingpong"))
    flags, _, payload = read_until(frames, PING)
    assert flags & FLAG_ACK and payload == b"pingpong"
    body = b"\0" + struct.pack(">I", 3) + b"0.3"
    frames.sock.sendall(frame(HEADERS, FLAG_END_HEADERS, 1, request_block("/t.S/Slow"))
                        + frame(DATA, FLAG_END_STREAM, 1, body) + frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL)))
    frames.sock.sendall(frame(HEADERS, FLAG_END_HEADERS, 3, request_block())
                        + frame(DATA, FLAG_END_STREAM, 3, b"\0" + struct.pack(">I", 2) + b"hi"))
    streams_answered = set()
    deadline = time.monotonic() + 3
    frames.sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            kind, flags, stream, _ = frames.read_frame()
        except (TimeoutError, socket.timeout):
            continue
        if kind == HEADERS and flags & FLAG_END_STREAM:
            streams_answered.add(stream)
    assert streams_answered == {3}  # stream 1 was reset by the client: no answer is sent on it
