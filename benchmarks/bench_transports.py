"""gRPC transports side by side: what each costs per call before any serving work.

    .venv/bin/python benchmarks/bench_transports.py [--rounds 4000] [--big-rounds 20]

Servers (each in its own process, answering every Predict at once with a canned
PredictResponse of the right size, so only the transport is measured):
- ``serveprof``: serveprof/server/grpc_http2.py, the embedded server's own transport;
- ``grpcio sync``: grpcio's server with a generic handler on raw bytes (no protobuf
  parsing), the lightest way to put grpcio under the same handlers;
- ``grpcio aio``: grpcio's asyncio server, same handler;
- ``h2 library``: the ``h2`` package's HTTP/2 state machine with this file's own
  socket handling (a reader thread per connection, a worker pool, one lock per
  connection), the maintained-library alternative to hand-written framing.
Requests are the existing benchmarks' (benchmarks/bench_server_overhead.py): the tiny
classifier at batch 1 (a 0.8 kB PredictRequest, a 3-float answer) and MobileNetV2 at
batch 32 (19 MB of float32, a 32x1000 answer). Each server gets its own connection from
serveprof's lean client, and the servers are called in turn, call after call, each
going first in turn, so the machine's noise falls on all alike. Reported per server: median and p99 latency, and
the server process's CPU per call (psutil, user + system).

Clients, against the serveprof server, also alternated call by call: the lean client
(serveprof/client/http2_unary.py) and grpcio's (a channel's unary_unary on raw bytes).
Reported: median latency and client CPU per call, of the calling thread
(``time.thread_time``) and of the whole client process (grpcio's own threads included).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
if os.environ.get("BENCH_SERVEPROF_TREE"):  # the "serveprof (tree)" server: another checkout's transport
    sys.path.insert(0, os.environ["BENCH_SERVEPROF_TREE"])

from tests.fixtures.attacks import predict_request  # noqa: E402

PREDICT = "/tensorflow.serving.PredictionService/Predict"
SERVERS = ("serveprof", "grpcio sync", "grpcio aio", "h2 library")


def predict_response(rows: int, columns: int) -> bytes:
    """A PredictResponse with one float32 output ``probabilities`` of shape [rows, columns], as tensor_content."""
    from tests.fixtures.attacks import _field, _varint

    shape = _field(2, b"\x08" + _varint(rows)) + _field(2, b"\x08" + _varint(columns))
    tensor = b"\x08\x01" + _field(2, shape) + _field(4, b"\0" * (4 * rows * columns))
    return _field(1, _field(1, b"probabilities") + _field(2, tensor))


# ------------------------------------------------------------------ servers (run in their own processes)


def serve(kind: str, port: int) -> None:
    answers = {"small": predict_response(1, 3), "big": predict_response(32, 1000)}

    def method(request) -> bytes:
        return answers["big" if len(request) > 100_000 else "small"]

    if kind.startswith("serveprof"):
        from serveprof.server.grpc_http2 import GrpcServer

        GrpcServer({PREDICT: method}, "127.0.0.1", port, max_workers=4, max_message_bytes=1 << 30).start()
    elif kind == "grpcio sync":
        from concurrent.futures import ThreadPoolExecutor

        import grpc

        server = grpc.server(ThreadPoolExecutor(max_workers=4), options=_grpc_options())
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "tensorflow.serving.PredictionService",
                    {"Predict": grpc.unary_unary_rpc_method_handler(lambda request, context: method(request))},
                ),
            )
        )
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
    elif kind == "grpcio aio":
        import asyncio

        import grpc

        async def run() -> None:
            async def predict(request, context):
                return method(request)

            server = grpc.aio.server(options=_grpc_options())
            server.add_generic_rpc_handlers(
                (
                    grpc.method_handlers_generic_handler(
                        "tensorflow.serving.PredictionService",
                        {"Predict": grpc.unary_unary_rpc_method_handler(predict)},
                    ),
                )
            )
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            print("ready", flush=True)
            await server.wait_for_termination()

        asyncio.run(run())
        return
    else:
        H2Server(method, port).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def _grpc_options():
    return [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]


class H2Server:
    """Unary gRPC on the ``h2`` library's state machine; sockets, threads and flow-control waits are ours."""

    def __init__(self, method, port: int):
        from concurrent.futures import ThreadPoolExecutor

        self.method = method
        self.listener = socket.create_server(("127.0.0.1", port), backlog=128)
        self.workers = ThreadPoolExecutor(max_workers=4)

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            sock, _ = self.listener.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events
        import h2.settings

        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        lock = threading.Lock()
        bodies: dict[int, bytearray] = {}
        pending: dict[int, memoryview] = {}  # answers waiting for flow-control window
        with lock:
            connection.initiate_connection()
            connection.update_settings(
                {
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1,
                    h2.settings.SettingCodes.MAX_FRAME_SIZE: (1 << 24) - 1,
                }
            )
            connection.increment_flow_control_window((1 << 31) - 1 - 65_535)
            sock.sendall(connection.data_to_send())

        def push(stream: int) -> None:  # lock held
            data = pending[stream]
            allowed = min(connection.local_flow_control_window(stream), len(data))
            frame_size = connection.max_outbound_frame_size
            for offset in range(0, allowed, frame_size):
                connection.send_data(stream, data[offset : min(offset + frame_size, allowed)])
            pending[stream] = data[allowed:]
            if not pending[stream]:
                del pending[stream]
                connection.send_headers(stream, [(b"grpc-status", b"0")], end_stream=True)

        def answer(stream: int, body: bytes) -> None:
            message = self.method(memoryview(body)[5:])
            with lock:
                connection.send_headers(stream, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                pending[stream] = memoryview(b"\0" + struct.pack(">I", len(message)) + message)
                push(stream)
                sock.sendall(connection.data_to_send())

        while True:
            data = sock.recv(262_144)
            if not data:
                return
            with lock:
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] += event.data
                        connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        self.workers.submit(answer, event.stream_id, bytes(bodies.pop(event.stream_id)))
                    elif isinstance(event, h2.events.WindowUpdated):
                        for stream in list(pending):
                            push(stream)
                sock.sendall(connection.data_to_send())


# ------------------------------------------------------------------ measuring


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(kind: str, tree: Path | None = None) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ, GRPC_VERBOSITY="ERROR", BENCH_SERVEPROF_TREE=str(tree) if kind == "serveprof (tree)" else "")
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind, "--port", str(port)], cwd=REPO, stdout=subprocess.PIPE, env=env
    )
    if process.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"{kind} server did not start")
    return process, port


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


def compare_servers(requests: dict[str, tuple[bytes, int]], tree: Path | None) -> list[list]:
    import importlib.util

    import psutil

    from serveprof.client.http2_unary import UnaryChannel

    kinds = [kind for kind in SERVERS if kind != "h2 library" or importlib.util.find_spec("h2") is not None]
    if len(kinds) < len(SERVERS):
        print("(the h2 library is not installed: pip install -e '.[bench]' to compare it too)")
    if tree is not None:
        kinds.insert(1, "serveprof (tree)")
    started = {kind: start(kind, tree) for kind in kinds}
    rows = []
    try:
        channels = {kind: UnaryChannel(f"127.0.0.1:{port}", timeout_s=120) for kind, (_, port) in started.items()}
        for case, (request, rounds) in requests.items():
            for channel in channels.values():
                for _ in range(3):
                    channel.call(PREDICT, request)
            times = {kind: [] for kind in channels}
            cpu = {kind: sum(psutil.Process(process.pid).cpu_times()[:2]) for kind, (process, _) in started.items()}
            order = list(channels.items())
            for index in range(rounds):
                for kind, channel in (
                    order[index % len(order) :] + order[: index % len(order)]
                ):  # each goes first in turn
                    begin = time.perf_counter()
                    channel.call(PREDICT, request)
                    times[kind].append(time.perf_counter() - begin)
            for kind, (process, _) in started.items():
                server_cpu = (sum(psutil.Process(process.pid).cpu_times()[:2]) - cpu[kind]) / rounds
                rows.append(
                    [
                        case,
                        kind,
                        rounds,
                        statistics.median(times[kind]) * 1e3,
                        percentile(times[kind], 0.99) * 1e3,
                        server_cpu * 1e3,
                    ]
                )
        for channel in channels.values():
            channel.close()
    finally:
        for process, _ in started.values():
            process.kill()
            process.wait()
    return rows


def compare_clients(requests: dict[str, tuple[bytes, int]]) -> list[list]:
    import grpc

    from serveprof.client.http2_unary import UnaryChannel

    process, port = start("serveprof")
    rows = []
    try:
        lean = UnaryChannel(f"127.0.0.1:{port}", timeout_s=120)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_grpc_options())
        stub = channel.unary_unary(PREDICT)
        clients = {
            "lean (serveprof)": lambda request: lean.call(PREDICT, request),
            "grpcio": lambda request: stub(request, timeout=120),
        }
        for case, (request, rounds) in requests.items():
            for call in clients.values():
                for _ in range(3):
                    call(request)
            times = {name: [] for name in clients}
            thread_cpu = {name: 0 for name in clients}
            process_cpu = {name: 0 for name in clients}
            order = list(clients.items())
            for index in range(rounds):
                for name, call in order[index % 2 :] + order[: index % 2]:
                    thread0, process0, begin = time.thread_time_ns(), time.process_time_ns(), time.perf_counter()
                    call(request)
                    times[name].append(time.perf_counter() - begin)
                    thread_cpu[name] += time.thread_time_ns() - thread0
                    process_cpu[name] += time.process_time_ns() - process0
            for name in clients:
                rows.append(
                    [
                        case,
                        name,
                        rounds,
                        statistics.median(times[name]) * 1e3,
                        thread_cpu[name] / rounds / 1e6,
                        process_cpu[name] / rounds / 1e6,
                    ]
                )
        lean.close()
        channel.close()
    finally:
        process.kill()
        process.wait()
    return rows


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(f"{cell:.3f}" if isinstance(cell, float) else str(cell) for cell in row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4000, help="calls per server at batch 1")
    parser.add_argument("--big-rounds", type=int, default=20, help="calls per server at batch 32 (19 MB)")
    parser.add_argument(
        "--tree",
        type=Path,
        help="also time the serveprof transport of this checkout (e.g. an older commit unpacked with git archive)",
    )
    parser.add_argument("--serve", choices=SERVERS + ("serveprof (tree)",), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    small = predict_request("tiny", [1, 8, 8, 3], content=b"\0" * 768)
    big = predict_request("mnv2", [32, 224, 224, 3], content=b"\0" * (32 * 224 * 224 * 3 * 4))
    requests = {"tiny b1": (small, args.rounds), "mnv2 b32": (big, args.big_rounds)}
    load = os.getloadavg()[0]
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} before"
    )
    print("\n## Servers (lean client)\n")
    print(
        table(
            ["request", "server transport", "calls", "median ms", "p99 ms", "server CPU ms/call"],
            compare_servers(requests, args.tree),
        )
    )
    print("\n## Clients (serveprof server)\n")
    print(
        table(
            ["request", "client", "calls", "median ms", "calling thread CPU ms/call", "client process CPU ms/call"],
            compare_clients(requests),
        )
    )
    print(f"\nload average {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
