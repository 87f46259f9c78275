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
from serveprof.wire.http2 import (
    CANCEL,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    FrameSocket,
    frame,
)
from serveprof.wire.status import Code, ServingError

LIMIT = 8 << 20


def _fail(request: bytes) -> bytes:
    raise ServingError(Code.NOT_FOUND, bytes(request).decode("utf-8"))


def _crash(request: bytes) -> bytes:
    raise KeyError("a bug")


def _slow(request: bytes) -> bytes:
    time.sleep(float(bytes(request).decode()))
    return b"done"


METHODS = {
    "/t.S/Echo": lambda request: request,
    "/t.S/Fail": _fail,
    "/t.S/Crash": _crash,
    "/t.S/Slow": _slow,
    "/t.S/Length": lambda request: str(len(request)).encode(),
}


@pytest.fixture
def server():
    made = GrpcServer(METHODS, "127.0.0.1", 0, max_workers=8, max_message_bytes=LIMIT)
    made.start()
    yield made
    made.stop(0)


@pytest.fixture
def channel(server):
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}",
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    ) as made:
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
    return Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )


@pytest.mark.parametrize(
    "breakage, code",
    [
        (frame(DATA, 0, 0, b"x"), PROTOCOL_ERROR),  # DATA on stream 0
        (frame(HEADERS, FLAG_END_HEADERS, 2, request_block()), PROTOCOL_ERROR),  # an even (server) stream id
        (frame(PING, 0, 0, b"short"), FRAME_SIZE_ERROR),
        (frame(SETTINGS, 0, 0, b"12345"), FRAME_SIZE_ERROR),
        (frame(HEADERS, FLAG_END_HEADERS, 1, b"\xff\xff\xff\xff\xff"), COMPRESSION_ERROR),  # no such HPACK index
        (frame(HEADERS, 0, 1, request_block()) + frame(DATA, 0, 1, b"x"), PROTOCOL_ERROR),  # no CONTINUATION
        (frame(0x5, FLAG_END_HEADERS, 1, b"\0\0\0\2" + request_block()), PROTOCOL_ERROR),  # PUSH_PROMISE
    ],
)
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
    frames.sock.sendall(
        frame(HEADERS, 0, 1, block)
        + frame(CONTINUATION, 0, 1, b"\0" * 40_000)
        + frame(CONTINUATION, FLAG_END_HEADERS, 1, b"\0" * 40_000)
    )
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
    frames.sock.sendall(
        frame(HEADERS, FLAG_END_HEADERS, 1, request_block("/t.S/Slow"))
        + frame(DATA, FLAG_END_STREAM, 1, body)
        + frame(RST_STREAM, 0, 1, struct.pack(">I", CANCEL))
    )
    frames.sock.sendall(
        frame(HEADERS, FLAG_END_HEADERS, 3, request_block())
        + frame(DATA, FLAG_END_STREAM, 3, b"\0" + struct.pack(">I", 2) + b"hi")
    )
    streams_answered = set()
    deadline = time.monotonic() + 3
    frames.sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            kind, flags, stream, _ = frames.read_frame()
        except TimeoutError:
            continue
        if kind == HEADERS and flags & FLAG_END_STREAM:
            streams_answered.add(stream)
    assert streams_answered == {3}  # stream 1 was reset by the client: no answer is sent on it


# ------------------------------------------------------- RFC 9113 where a peer can break it

from serveprof.server.limits import BufferBudget, Limits  # noqa: E402
from serveprof.wire.http2 import (  # noqa: E402
    ENHANCE_YOUR_CALM,
    FLAG_PADDED,
    FLOW_CONTROL_ERROR,
    NO_ERROR,
    PRIORITY,
    REFUSED_STREAM,
    SETTINGS_INITIAL_WINDOW_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
)

MAX = (1 << 31) - 1
COUNTED: list[bytes] = []


def _count(request: bytes) -> bytes:
    COUNTED.append(bytes(request))
    time.sleep(0.3)
    return b"counted"


LIMITED_METHODS = dict(METHODS, **{"/t.S/Count": _count})


@pytest.fixture
def make_server():
    """``make_server(max_workers=1, **limits)``: an in-process server with its own Limits, stopped at teardown."""
    made = []

    def make(max_workers: int = 2, budget: int = 64 << 20, **limits) -> GrpcServer:
        server = GrpcServer(
            LIMITED_METHODS,
            "127.0.0.1",
            0,
            max_workers=max_workers,
            max_message_bytes=LIMIT,
            limits=Limits(budget=BufferBudget(budget), **limits),
        )
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop(0)


def message(payload: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(payload)) + payload


def open_stream(frames: FrameSocket, stream: int, path: str = "/t.S/Echo", end: bool = False) -> None:
    frames.sock.sendall(frame(HEADERS, FLAG_END_HEADERS | (FLAG_END_STREAM if end else 0), stream, request_block(path)))


def rst_code(frames: FrameSocket, stream: int) -> int:
    while True:
        flags, got, payload = read_until(frames, RST_STREAM)
        if got == stream:
            return struct.unpack(">I", payload)[0]


def grpc_statuses(frames: FrameSocket, streams) -> dict[int, tuple[str, str]]:
    """The grpc-status and grpc-message of each of ``streams``' answers, read off a raw connection."""
    from hpack import Decoder

    decoder, found = Decoder(), {}
    while set(streams) - set(found):
        kind, flags, got, payload = frames.read_frame()
        if kind == HEADERS:
            fields = dict(decoder.decode(bytes(payload)))
            if got in streams and "grpc-status" in fields:
                found[got] = fields["grpc-status"], fields.get("grpc-message", "")
    return found


def grpc_status(frames: FrameSocket, stream: int) -> tuple[str, str]:
    return grpc_statuses(frames, [stream])[stream]


@pytest.mark.parametrize("update_stream", [0, 1])
def test_a_window_update_past_2_31_minus_1_is_a_flow_control_error(server, channel, update_stream):
    frames = raw_connection(server)
    if update_stream:
        open_stream(frames, 1)
    frames.sock.sendall(frame(WINDOW_UPDATE, 0, update_stream, struct.pack(">I", MAX)))
    if update_stream:  # the stream's window: a stream error (RFC 9113 §6.9.1)
        assert rst_code(frames, 1) == FLOW_CONTROL_ERROR
    else:  # the connection's: a connection error
        assert goaway_code(frames) == FLOW_CONTROL_ERROR
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_a_settings_change_that_overflows_a_stream_window_is_a_flow_control_error(server):
    frames = raw_connection(server)
    open_stream(frames, 1)
    frames.sock.sendall(
        frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", MAX - 65_535))  # the stream's window: 2^31-1
        + frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 65_536))
    )
    assert goaway_code(frames) == FLOW_CONTROL_ERROR  # RFC 9113 §6.9.2


def test_data_beyond_the_streams_window_is_a_flow_control_error(server, channel):
    frames = raw_connection(server)
    open_stream(frames, 1, "/t.S/Length")
    window = server.initial_window
    frames.sock.sendall(frame(DATA, 0, 1, message(b"\0" * (window + 10))))  # one frame larger than the window
    assert rst_code(frames, 1) == FLOW_CONTROL_ERROR
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_data_on_a_stream_never_opened_is_a_connection_error(server):
    frames = raw_connection(server)
    frames.sock.sendall(frame(DATA, FLAG_END_STREAM, 7, message(b"x")))
    assert goaway_code(frames) == PROTOCOL_ERROR


def test_data_on_a_closed_stream_is_a_stream_error_and_the_connection_goes_on(server):
    frames = raw_connection(server)
    open_stream(frames, 1)
    frames.sock.sendall(frame(DATA, FLAG_END_STREAM, 1, message(b"one")))
    assert grpc_status(frames, 1) == ("0", "")
    frames.sock.sendall(frame(DATA, 0, 1, b"late"))  # the client had ended stream 1
    assert rst_code(frames, 1) == STREAM_CLOSED
    open_stream(frames, 3)
    frames.sock.sendall(frame(DATA, FLAG_END_STREAM, 3, message(b"two")))
    assert grpc_status(frames, 3) == ("0", "")


def test_a_ping_flood_gets_enhance_your_calm_as_grpc_core_answers_it(server, channel):
    frames = raw_connection(server)
    frames.sock.sendall(frame(PING, 0, 0, b"pingpong") * 10)
    _, _, payload = read_until(frames, GOAWAY)
    assert struct.unpack(">I", payload[4:8])[0] == ENHANCE_YOUR_CALM and payload[8:] == b"too_many_pings"
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


@pytest.mark.parametrize(
    "flood",
    [
        frame(SETTINGS, 0, 0),  # the first is the handshake's; each later one costs a token
        frame(PRIORITY, 0, 1, b"\0\0\0\0\x10"),
        frame(0x20, 0, 0, b"an unknown frame type"),
    ],
    ids=["SETTINGS", "PRIORITY", "unknown"],
)
def test_a_control_frame_flood_gets_enhance_your_calm(server, channel, flood):
    frames = raw_connection(server)
    frames.sock.sendall(flood * 1200)
    assert goaway_code(frames) == ENHANCE_YOUR_CALM
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_empty_data_frames_and_resets_count_against_the_same_bucket(server):
    frames = raw_connection(server)
    open_stream(frames, 1)
    frames.sock.sendall(frame(DATA, 0, 1, b"") * 600)
    burst = b"".join(
        frame(HEADERS, FLAG_END_HEADERS, stream, request_block())
        + frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
        for stream in range(3, 1203, 2)
    )
    frames.sock.sendall(burst)
    assert goaway_code(frames) == ENHANCE_YOUR_CALM


def test_a_settings_frame_with_thousands_of_entries_is_refused(server):
    frames = raw_connection(server)
    frames.sock.sendall(frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 1000) * 10_000))
    assert goaway_code(frames) == ENHANCE_YOUR_CALM


def test_a_continuation_flood_is_cut_off_after_sixteen_frames(server, channel):
    frames = raw_connection(server)
    frames.sock.sendall(frame(HEADERS, 0, 1, request_block()))
    try:
        frames.sock.sendall(frame(CONTINUATION, 0, 1, b"") * 5000)
    except (BrokenPipeError, ConnectionResetError):
        pass
    assert goaway_code(frames) == ENHANCE_YOUR_CALM
    assert call(channel, "/t.S/Echo", b"still here") == b"still here"


def test_padding_that_fills_a_data_frame_is_refused(server):
    frames = raw_connection(server)
    open_stream(frames, 1)
    frames.sock.sendall(frame(DATA, FLAG_PADDED, 1, b"\x05abc"))
    assert goaway_code(frames) == PROTOCOL_ERROR


def test_a_request_reset_before_its_worker_starts_never_runs(make_server):
    COUNTED.clear()
    server = make_server(max_workers=1)
    frames = raw_connection(server)
    burst = []
    for stream in range(1, 42, 2):  # 21 calls; the first occupies the only worker for 0.3 s
        burst.append(
            frame(HEADERS, FLAG_END_HEADERS, stream, request_block("/t.S/Count"))
            + frame(DATA, FLAG_END_STREAM, stream, message(str(stream).encode()))
        )
        if stream > 1:
            burst.append(frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL)))
    frames.sock.sendall(b"".join(burst))
    assert grpc_status(frames, 1) == ("0", "")
    time.sleep(0.5)
    assert COUNTED == [b"1"]  # the 20 reset calls waited in the queue and were dropped


def test_a_full_queue_answers_resource_exhausted_as_grpc_does(make_server):
    server = make_server(max_workers=1, max_queued_requests=2)
    frames = raw_connection(server)
    frames.sock.sendall(
        b"".join(
            frame(HEADERS, FLAG_END_HEADERS, stream, request_block("/t.S/Slow"))
            + frame(DATA, FLAG_END_STREAM, stream, message(b"0.3"))
            for stream in (1, 3, 5, 7, 9)
        )
    )
    statuses = list(grpc_statuses(frames, (1, 3, 5, 7, 9)).values())
    # One worker and two places in the queue: at most three are served, the rest refused at once.
    refused = statuses.count(("8", "Server Threadpool Exhausted"))
    assert refused >= 2 and statuses.count(("0", "")) == 5 - refused


def test_a_zero_window_client_holds_no_worker_and_is_dropped_in_time(make_server):
    server = make_server(max_workers=1, request_timeout_s=1.0)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    frames = FrameSocket(sock)
    sock.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, 0)))
    for stream in (1, 3, 5):
        sock.sendall(
            frame(HEADERS, FLAG_END_HEADERS, stream, request_block())
            + frame(DATA, FLAG_END_STREAM, stream, message(b"z" * 100_000))
        )
    time.sleep(0.2)
    started = time.monotonic()
    with UnaryChannel(f"127.0.0.1:{server.port}", timeout_s=5) as other:  # the only worker is free
        assert other.call("/t.S/Echo", b"served") == b"served"
    assert time.monotonic() - started < 0.5
    for _ in range(4):  # a 1-byte WINDOW_UPDATE now and then does not keep an answer alive
        sock.sendall(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1)))
        time.sleep(0.25)
    assert rst_code(frames, 1) == CANCEL


def test_a_body_that_never_ends_is_answered_deadline_exceeded(make_server):
    server = make_server(request_timeout_s=0.5)
    frames = raw_connection(server)
    open_stream(frames, 1)
    frames.sock.sendall(frame(DATA, 0, 1, message(b"x" * 1000)[:500]))
    started = time.monotonic()
    assert grpc_status(frames, 1)[0] == "4"  # DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5


def test_request_bytes_beyond_the_budget_are_resource_exhausted(make_server):
    server = make_server(budget=1 << 20)
    frames = raw_connection(server)
    for stream in (1, 3):
        open_stream(frames, stream, "/t.S/Length")
        frames.sock.sendall(frame(DATA, 0, stream, b"\0" + struct.pack(">I", 600_000) + b"x" * 100))
    code, details = grpc_status(frames, 3)  # stream 1 has no answer yet: nothing is skipped
    assert code == "8" and "--max_buffered_bytes" in details
    frames.sock.sendall(frame(DATA, FLAG_END_STREAM, 1, b"x" * (600_000 - 100)))
    assert grpc_status(frames, 1) == ("0", "")
    assert server.limits.budget.used == 0


def test_a_silent_connection_is_closed_after_the_handshake_timeout(make_server):
    server = make_server(handshake_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(PREFACE[:10])
        started = time.monotonic()
        assert sock.recv(100) == b""
        assert time.monotonic() - started < 1.5


def test_an_idle_connection_gets_goaway_and_the_lean_client_reconnects(make_server):
    server = make_server(idle_timeout_s=0.5)
    with UnaryChannel(f"127.0.0.1:{server.port}", timeout_s=5) as lean:
        assert lean.call("/t.S/Echo", b"one") == b"one"
        time.sleep(1.2)  # the server closes the idle connection meanwhile
        assert lean.call("/t.S/Echo", b"two") == b"two"


def test_at_the_connection_cap_the_connection_idle_longest_makes_room(make_server):
    server = make_server(max_connections=3)
    idle = [raw_connection(server) for _ in range(3)]
    time.sleep(0.2)
    with UnaryChannel(f"127.0.0.1:{server.port}", timeout_s=5) as lean:
        assert lean.call("/t.S/Echo", b"admitted") == b"admitted"
    assert goaway_code(idle[0]) == NO_ERROR
    assert len(server.loop.connections) <= 3


def test_streams_beyond_the_concurrency_limit_are_refused(make_server):
    server = make_server(max_workers=1)
    frames = raw_connection(server)
    frames.sock.sendall(
        b"".join(frame(HEADERS, FLAG_END_HEADERS, stream, request_block("/t.S/Slow")) for stream in range(1, 204, 2))
    )  # 102 open streams; the server allows 100
    assert rst_code(frames, 201) == REFUSED_STREAM


def test_a_repeated_predict_request_lands_its_tensor_where_tensorflow_feeds_it_without_a_copy():
    """TensorFlow copies a feed that is not ALIGNMENT-aligned (1.9 ms for a 19 MB batch here, docs/server.md):
    the transport places each message so the payload the last request of its method had lies aligned."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from serveprof.server.grpc_http2 import ALIGNMENT
    from serveprof.server.predict_wire import decode_predict_request, payload_offset
    from serveprof.wire.tensor_codec import to_ndarray

    path = "/tensorflow.serving.PredictionService/Predict"
    offsets: dict[str, int] = {}

    def predict(raw) -> bytes:  # what Handlers.predict does with the offset, then where the feed lies
        _, inputs = decode_predict_request(raw)
        offsets[path] = payload_offset(raw, inputs)
        array = to_ndarray(*inputs["images"])
        assert np.shares_memory(array, np.frombuffer(raw, np.uint8))  # fed from the request bytes themselves
        return str(array.ctypes.data % ALIGNMENT).encode()

    server = GrpcServer(
        {path: predict}, "127.0.0.1", 0, max_workers=2, max_message_bytes=LIMIT, payload_offsets=offsets
    )
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            batch = np.ones((1, 128, 128, 3), np.float32)  # 196 kB: above the size protobuf's parser takes whole
            misplaced = 0
            for model in ("m", "a-model-whose-longer-name-moves-the-tensor"):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = model
                request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
                for attempt in range(3):
                    remainder = int(call(channel, path, request.SerializeToString()))
                    if attempt == 0:
                        misplaced += remainder != 0
                    else:
                        assert remainder == 0, f"request {attempt + 1} for {model!r}: payload at {remainder} mod 64"
            assert misplaced >= 1  # the name's length did move the tensor: the placement followed it
    finally:
        server.stop(1).wait(5)
