"""The embedded server under careless and hostile clients (issue 13's table), on loopback, bounded in count and time.

One ``serveprof serve`` with short timeouts takes every case. Each case drives its
attack with raw frames or raw sockets and asserts, beside what the server answered:
- a fresh gRPC client (grpcio, new channel) and a fresh REST client (new connection)
  are served during the attack or within 2 s after it;
- the server's RSS comes back within RSS_BOUND of what it was before, and its thread
  count within THREADS_BOUND (the worker pools are fixed: no thread per connection).
docs/reliability.md has the figures these cases measured, before and after.
"""

from __future__ import annotations

import json
import resource
import socket
import struct
import time

import psutil
import pytest

from tests.fixtures.attacks import (
    CANCEL,
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    HEADERS,
    PING,
    PREDICT,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    Background,
    Target,
    call_frames,
    closed_by_peer,
    frame,
    goaway_of,
    h2_connection,
    idle_connections,
    predict_request,
    rapid_reset,
    read_frames,
    request_headers,
    send_quietly,
)
from tests.fixtures.embedded_server import TINY_IMAGE_SIZE, TINY_MODEL_NAME, running_server

MiB = 1 << 20
RSS_BOUND = 40 * MiB
THREADS_BOUND = 2
RECOVERY_S = 2.0
FLAGS = (
    "--max_request_bytes=67108864",
    "--max_buffered_bytes=67108864",
    "--handshake_timeout_ms=1000",
    "--grpc_request_timeout_ms=2000",
    "--rest_api_timeout_in_ms=2000",
    "--max_connections=300",
    "--grpc_max_threads=4",
    "--rest_api_num_threads=4",
)


@pytest.fixture(scope="module")
def target(tiny_classifier_base, tmp_path_factory):
    with running_server(tiny_classifier_base, *FLAGS, log_dir=tmp_path_factory.mktemp("attacks")) as server:
        image = [[[0.5] * 3] * TINY_IMAGE_SIZE] * TINY_IMAGE_SIZE
        made = Target(
            server.grpc_port,
            server.rest_port,
            server.pid,
            TINY_MODEL_NAME,
            predict_request(
                TINY_MODEL_NAME, [1, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3], content=b"\0" * (4 * 3 * TINY_IMAGE_SIZE**2)
            ),
            json.dumps({"instances": [image]}).encode(),
        )
        made.server = server
        assert made.served_within(30) is not None  # warm: TensorFlow's first run is slow
        yield made


@pytest.fixture
def before(target):
    """The server's usage before the case; after it, a fresh client of each API must be served and usage settle."""
    usage = target.usage()
    yield usage
    recovered = target.served_within(RECOVERY_S)
    assert recovered is not None, "a fresh gRPC and REST client were not both served within 2 s after the attack"
    after = target.settle(usage, RSS_BOUND, THREADS_BOUND)
    assert after.rss <= usage.rss + RSS_BOUND, f"RSS grew by {(after.rss - usage.rss) / MiB:.0f} MiB"
    assert after.threads <= usage.threads + THREADS_BOUND, f"threads {usage.threads} -> {after.threads}"
    assert target.server.process.poll() is None


def test_running_out_of_descriptors_does_not_stop_either_api_accepting(target, before):
    process = psutil.Process(target.pid)
    soft, hard = process.rlimit(resource.RLIMIT_NOFILE)
    process.rlimit(resource.RLIMIT_NOFILE, (process.num_fds() + 40, hard))
    try:
        with idle_connections(target.grpc_port, 120), idle_connections(target.rest_port, 120):
            assert target.served_within(RECOVERY_S) is not None  # the idle ones make room for them
    finally:
        process.rlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "Too many open files" in target.server.log()


def test_slow_and_silent_connections_are_cut_off_by_their_deadlines(target, before):
    with idle_connections(target.grpc_port, 100, PREFACE_START), idle_connections(target.rest_port, 100, b"PO") as rest:
        assert target.served_within(RECOVERY_S) is not None
        assert closed_by_peer(rest[0], 2.5) is not None  # the handshake timeout (1 s)
    with socket.create_connection(("127.0.0.1", target.rest_port), timeout=5) as sock:
        # A kept-alive connection whose second request dribbles in: a deadline for the whole request (2 s),
        # however often a byte arrives.
        sock.sendall(b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b" 200 " in sock.recv(4096)
        started, answer = time.monotonic(), b""
        for byte in b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 40:
            if not send_quietly(sock, bytes([byte])):
                break
            time.sleep(0.1)
            try:
                answer = sock.recv(4096, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                pass
        assert answer.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3.0, answer[:100]


PREFACE_START = b"PRI * HTTP/2.0\r\n"


def test_a_zero_window_holds_no_worker_and_answers_are_dropped_in_time(target, before):
    sock = h2_connection(target.grpc_port, settings=struct.pack(">HI", 4, 0))  # SETTINGS_INITIAL_WINDOW_SIZE 0
    sock.sendall(b"".join(call_frames(stream, target.request) for stream in range(1, 33, 2)))
    time.sleep(0.3)
    assert target.served_within(RECOVERY_S) is not None  # with 16 answers waiting for window
    dribble = Background(
        lambda: [
            send_quietly(sock, frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1))) or time.sleep(0.4) for _ in range(8)
        ]
    )
    frames = read_frames(sock, 4.0, stop=lambda got: sum(kind == RST_STREAM for kind, *_ in got) >= 16)
    dribble.join()
    resets = [payload for kind, _, _, payload in frames if kind == RST_STREAM]
    assert len(resets) == 16 and set(resets) == {struct.pack(">I", CANCEL)}  # after --grpc_request_timeout_ms
    sock.close()


def test_rapid_reset_runs_no_reset_request(target, before):
    goaway = rapid_reset(target.grpc_port, TINY_MODEL_NAME, TINY_IMAGE_SIZE)
    assert goaway is not None and goaway[0] == ENHANCE_YOUR_CALM
    time.sleep(1.0)
    # Were they run, 2000 such predicts would take many seconds of CPU.
    assert target.usage().cpu_s - before.cpu_s < 5.0


def test_a_continuation_flood_is_cut_off(target, before):
    sock = h2_connection(target.grpc_port)
    send_quietly(sock, frame(HEADERS, 0, 1, request_headers()) + frame(CONTINUATION, 0, 1) * 200_000)
    assert goaway_of(read_frames(sock, 3.0, stop=goaway_of))[0] == ENHANCE_YOUR_CALM
    sock.close()


def test_unfinished_bodies_hold_at_most_the_budget_and_time_out(target, before):
    declared, sent = 16 * MiB, 4 * MiB
    sock = h2_connection(target.grpc_port)
    for stream in range(1, 17, 2):  # 8 streams of 16 MiB each; large requests may take 56 of the 64 MiB budget
        sock.sendall(
            frame(HEADERS, END_HEADERS, stream, request_headers())
            + frame(DATA, 0, stream, b"\0" + struct.pack(">I", declared) + b"\0" * sent)
        )
    assert target.served_within(RECOVERY_S) is not None  # an eighth of the budget is kept for small requests
    frames = read_frames(
        sock, 4.0, stop=lambda got: sum(kind == HEADERS and flags & END_STREAM for kind, flags, *_ in got) >= 8
    )
    trailers = [payload for kind, flags, _, payload in frames if kind == HEADERS and flags & END_STREAM]
    assert len(trailers) == 8
    assert sum(b"grpc-status\x018" in block for block in trailers) == 5  # RESOURCE_EXHAUSTED: over the budget
    assert sum(b"grpc-status\x014" in block for block in trailers) == 3  # DEADLINE_EXCEEDED: never finished
    assert target.usage().rss < before.rss + 3 * sent + RSS_BOUND  # what arrived, not what was declared
    sock.close()


def test_many_connections_with_large_header_blocks_keep_little_hpack_state(target, before):
    conns = []
    for index in range(100):
        sock = h2_connection(target.grpc_port)
        blocks = b"".join(
            frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                stream,
                request_headers("/t.S/Nope", ((b"x-pad", b"%d-%d-" % (index, stream) + b"p" * 14_000),)),
            )
            for stream in range(1, 65, 2)
        )
        sock.sendall(blocks)
        conns.append(sock)
    time.sleep(1.0)
    assert target.usage().rss < before.rss + RSS_BOUND  # while the connections are open
    for sock in conns:
        sock.close()


@pytest.mark.parametrize(
    "flood, words",
    [
        (frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65_535) * 10_922), b"SETTINGS frame with"),  # one 64 KiB frame
        (frame(SETTINGS, 0, 0) * 5_000, b"too many SETTINGS"),
        (frame(PING, 0, 0, b"12345678") * 100_000, b"too_many_pings"),
    ],
    ids=["large SETTINGS", "SETTINGS flood", "PING flood"],
)
def test_control_frame_floods_get_enhance_your_calm(target, before, flood, words):
    sock = h2_connection(target.grpc_port)
    send_quietly(sock, flood)
    code, text = goaway_of(read_frames(sock, 3.0, stop=goaway_of))
    assert code == ENHANCE_YOUR_CALM and words in text
    sock.close()
    assert target.usage().cpu_s - before.cpu_s < 2.0


def test_a_45_byte_request_for_a_64_mib_tensor_is_refused_before_allocation(target, before):
    import grpc

    request = predict_request(TINY_MODEL_NAME, [5461, 32, 32, 3], float_val=(1.0,))  # just under the 64 MiB cap
    assert len(request) < 60
    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        calls = [channel.unary_unary(PREDICT).future(request, timeout=10) for _ in range(4)]
        for call in calls:
            with pytest.raises(grpc.RpcError) as raised:
                call.result()
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "pads" in raised.value.details()
    assert target.usage().rss < before.rss + RSS_BOUND


@pytest.mark.parametrize(
    "dims, dtype",
    [
        ([0, 1 << 40, 1 << 40], 1),
        ([1] * 65, 1),
        ([1] * 300, 1),
        ([1 << 62, 1 << 62], 1),
        ([1, 8, 8, 3], 0),
        ([1, 8, 8, 3], 20),
        ([1, 8, 8, 3], 21),
        ([1, 8, 8, 3], 99),
    ],
    ids=["0x2^40x2^40", "rank 65", "rank 300", "2^62x2^62", "DT_INVALID", "DT_RESOURCE", "DT_VARIANT", "dtype 99"],
)
def test_bad_shapes_and_dtypes_are_invalid_argument_without_a_traceback(target, before, dims, dtype):
    import grpc

    log_before = target.server.log().count("Traceback")
    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel, pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(PREDICT)(predict_request(TINY_MODEL_NAME, dims, dtype=dtype), timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    assert target.server.log().count("Traceback") == log_before


SMUGGLED = b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "head, status",
    [
        (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", 400),
        (b"Content-Length: 4\r\nContent-Length: 40\r\n", 400),
        (b"Content-Length: 4, 40\r\n", 400),
        (b"Transfer-Encoding: gzip, chunked\r\n", 501),
        (b"Transfer-Encoding: xchunkedx\r\n", 400),
        (b"Transfer-Encoding: chunked, gzip\r\n", 400),
        (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400),
    ],
    ids=["CL+TE", "two CLs", "CL list", "TE gzip", "xchunkedx", "chunked not last", "chunked twice"],
)
def test_rest_framing_that_could_smuggle_a_request_is_refused_and_closed(target, before, head, status):
    with socket.create_connection(("127.0.0.1", target.rest_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n0\r\n\r\n" + SMUGGLED)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:200]
    assert answer.count(b"HTTP/1.1") == 1  # the connection closed: the second request was not read as one


def test_rest_http_1_0_with_transfer_encoding_is_refused(target, before):
    with socket.create_connection(("127.0.0.1", target.rest_port), timeout=5) as sock:
        sock.sendall(b"POST /v1/models/tiny:predict HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_rest_takes_a_burst_of_connections_without_syn_retries(target, before):
    started = time.monotonic()
    with idle_connections(target.rest_port, 300) as socks:
        took = time.monotonic() - started
        assert all(sock.getpeername() for sock in socks)
    assert took < 1.0  # a listen backlog of 5 made one connect in seven wait 1 s for a SYN retransmit


def test_rest_pipelined_requests_get_their_answers_in_order(target, before):
    # The control for the smuggling cases: well-framed requests back to back are each answered.
    body = target.rest_body
    post = (b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    with socket.create_connection(("127.0.0.1", target.rest_port), timeout=5) as sock:
        sock.sendall(post + SMUGGLED + post[:40])
        time.sleep(0.2)
        sock.sendall(post[40:] + b"GET /v1/models/tiny HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.count(b"HTTP/1.1 200 OK") == 4 and answer.count(b"predictions") == 2


def test_rest_expect_100_continue_is_answered_before_the_body(target, before):
    body = target.rest_body
    with socket.create_connection(("127.0.0.1", target.rest_port), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
