"""Issue 13's attacks against a server, measured: is it available during each, and how fast does it recover?

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/attack_server.py [--targets serveprof grpcio] \
        [--tree DIR] [--cases ...]

Targets (each a real ``serveprof serve`` process serving the tiny classifier, restarted
for every case so that one attack's damage does not fall on the next):
- ``serveprof``: this tree's server, with its default limits;
- ``grpcio``: the same server and the same gRPC handlers, with grpcio's server as the
  gRPC transport in place of serveprof/server/grpc_http2.py (REST stays serveprof's);
- ``tree``: the server of another checkout, ``--tree DIR`` (e.g. an older commit
  unpacked with ``git archive``), to measure a before and after.
Every target gets --max_request_bytes=64 MiB and --grpc_max_threads=8. The attacks are
tests/fixtures/attacks.py's, each bounded in count and time. Measured per case: whether
a fresh gRPC client (grpcio, a new channel) and a fresh REST client (a new connection)
were both served while the attack went on (within 3 s), how long after the attack
ended until they were (30 s at most), the server's peak RSS growth and thread count
(sampled every 50 ms), its CPU seconds, and what the attacking connection was told.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.attacks import (  # noqa: E402
    CONTINUATION,
    END_HEADERS,
    HEADERS,
    PING,
    PREFACE,
    SETTINGS,
    Target,
    call_frames,
    data_frames,
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
from tests.fixtures.embedded_server import free_port, server_env  # noqa: E402

MiB = 1 << 20
MODEL, IMAGE = "tiny", 8
COMMON_FLAGS = ["--max_request_bytes=67108864", "--grpc_max_threads=8"]
CODES = {
    0: "NO_ERROR",
    1: "PROTOCOL_ERROR",
    3: "FLOW_CONTROL_ERROR",
    6: "FRAME_SIZE_ERROR",
    9: "COMPRESSION_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
}


# ------------------------------------------------------------------ the attacks


def fd_exhaustion(target: Target) -> dict:
    import psutil

    process = psutil.Process(target.pid)
    soft, hard = process.rlimit(resource.RLIMIT_NOFILE)
    process.rlimit(resource.RLIMIT_NOFILE, (process.num_fds() + 100, hard))
    try:
        with idle_connections(target.grpc_port, 300), idle_connections(target.rest_port, 300):
            during = target.served_within(3) is not None
    finally:
        process.rlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"during": during, "seen": "600 idle connections at a limit of 100 free descriptors"}


def slowloris(target: Target) -> dict:
    with idle_connections(target.grpc_port, 200, PREFACE[:10]), idle_connections(target.rest_port, 200, b"P") as rest:
        stop = time.monotonic() + 5
        during = None
        while time.monotonic() < stop:
            for sock in rest:
                send_quietly(sock, b"O")
            if during is None:
                during = target.served_within(3) is not None
            time.sleep(1)
    return {"during": during, "seen": "200 partial gRPC prefaces, 200 REST heads at a byte a second, for 5 s"}


def zero_window(target: Target) -> dict:
    sock = h2_connection(target.grpc_port, settings=struct.pack(">HI", 4, 0))
    sock.sendall(b"".join(call_frames(stream, target.request) for stream in range(1, 33, 2)))
    time.sleep(0.5)
    during = target.served_within(3) is not None
    time.sleep(2)
    sock.close()
    return {"during": during, "seen": "16 calls on a zero window, held 5 s"}


def reset_calls(target: Target) -> dict:
    goaway = rapid_reset(target.grpc_port, MODEL, IMAGE)
    return {"during": None, "seen": f"2000 calls of batch 2048, each reset at once; {_goaway(goaway)}"}


def continuation_flood(target: Target) -> dict:
    sock = h2_connection(target.grpc_port)
    sent = send_quietly(sock, frame(HEADERS, 0, 1, request_headers()) + frame(CONTINUATION, 0, 1) * 500_000)
    goaway = goaway_of(read_frames(sock, 3.0, stop=goaway_of))
    sock.close()
    return {
        "during": None,
        "seen": f"500k empty CONTINUATION frames ({'all sent' if sent else 'cut off'}); {_goaway(goaway)}",
    }


def unfinished_bodies(target: Target) -> dict:
    sock = h2_connection(target.grpc_port)
    for stream in range(1, 17, 2):
        send_quietly(
            sock,
            frame(HEADERS, END_HEADERS, stream, request_headers())
            + data_frames(stream, b"\0" + struct.pack(">I", 64 * MiB) + b"\0" * (16 * MiB)),
        )
    during = target.served_within(3) is not None
    frames = read_frames(sock, 2.0)
    sock.close()
    refused = sum(kind == HEADERS and b"grpc-status" in payload for kind, _, _, payload in frames)
    return {"during": during, "seen": f"8 streams declaring 64 MiB, 16 MiB sent each, held 5 s; {refused} answered"}


def hpack_state(target: Target) -> dict:
    conns = []
    for index in range(100):
        sock = h2_connection(target.grpc_port)
        send_quietly(
            sock,
            b"".join(
                frame(
                    HEADERS,
                    END_HEADERS | 1,
                    stream,
                    request_headers("/t.S/Nope", ((b"x-pad", b"%d-%d-" % (index, stream) + b"p" * 14_000),)),
                )
                for stream in range(1, 65, 2)
            ),
        )
        conns.append(sock)
    time.sleep(2)
    for sock in conns:
        sock.close()
    return {"during": None, "seen": "100 connections, 32 distinct 14 kB header blocks each, held 2 s"}


def settings_flood(target: Target) -> dict:
    sock = h2_connection(target.grpc_port)
    send_quietly(sock, frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65_535) * 10_922) * 200)
    goaway = goaway_of(read_frames(sock, 3.0, stop=goaway_of))
    sock.close()
    return {"during": None, "seen": f"200 SETTINGS frames of 64 KiB; {_goaway(goaway)}"}


def ping_flood(target: Target) -> dict:
    sock = h2_connection(target.grpc_port)
    send_quietly(sock, frame(PING, 0, 0, b"12345678") * 200_000)
    frames = read_frames(sock, 3.0, stop=goaway_of)
    sock.close()
    acks = sum(kind == PING for kind, *_ in frames)
    return {"during": None, "seen": f"200k PINGs; {acks} answered; {_goaway(goaway_of(frames))}"}


def expansion(target: Target) -> dict:
    import grpc

    request = predict_request(MODEL, [5461, 32, 32, 3], float_val=(1.0,))
    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        calls = [
            channel.unary_unary("/tensorflow.serving.PredictionService/Predict").future(request, timeout=60)
            for _ in range(4)
        ]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
    return {"during": None, "seen": f"4 Predicts of {len(request)} bytes for a 64 MiB tensor: {', '.join(codes)}"}


def bad_shape(target: Target) -> dict:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{target.grpc_port}") as channel:
        codes = []
        for dims in ([0, 1 << 40, 1 << 40], [1] * 65):
            try:
                channel.unary_unary("/tensorflow.serving.PredictionService/Predict")(
                    predict_request(MODEL, dims), timeout=10
                )
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
    return {"during": None, "seen": f"shape [0,2^40,2^40]: {codes[0]}; rank 65: {codes[1]}"}


def _goaway(goaway) -> str:
    return "no GOAWAY" if goaway is None else f"GOAWAY {CODES.get(goaway[0], goaway[0])}"


CASES = {
    "fd exhaustion": fd_exhaustion,
    "slowloris": slowloris,
    "zero window": zero_window,
    "rapid reset": reset_calls,
    "CONTINUATION flood": continuation_flood,
    "unfinished bodies": unfinished_bodies,
    "HPACK state": hpack_state,
    "SETTINGS flood": settings_flood,
    "PING flood": ping_flood,
    "45-byte expansion": expansion,
    "bad shapes": bad_shape,
}


# ------------------------------------------------------------------ targets and measurement


class Sampler:
    """Peak RSS and threads of a process, every 50 ms, on a thread."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.rss = self.threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.rss = max(self.rss, self.process.memory_info().rss)
                self.threads = max(self.threads, self.process.num_threads())
            except Exception:  # noqa: BLE001 - the process may be gone
                return
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_target(kind: str, base: Path, tree: Path | None, log_path: Path):
    grpc_port, rest_port = free_port(), free_port()
    flags = [
        f"--model_name={MODEL}",
        f"--model_base_path={base}",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        *COMMON_FLAGS,
    ]
    if kind == "grpcio":
        command, cwd = [sys.executable, __file__, "--grpcio-serve", *flags], REPO
    else:
        command, cwd = [sys.executable, "-m", "serveprof", "serve", *flags], tree if kind == "tree" else REPO
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=server_env(), stdout=log, stderr=subprocess.STDOUT)
    image = [[[0.5] * 3] * IMAGE] * IMAGE
    target = Target(
        grpc_port,
        rest_port,
        process.pid,
        MODEL,
        predict_request(MODEL, [1, IMAGE, IMAGE, 3], content=b"\0" * (4 * 3 * IMAGE * IMAGE)),
        json.dumps({"instances": [image]}).encode(),
    )
    if target.served_within(180) is None:
        process.kill()
        raise RuntimeError(f"{kind} server did not serve: {log_path.read_text()[-2000:]}")
    return process, target


def measure(kind: str, case: str, base: Path, tree: Path | None, workdir: Path) -> dict:
    process, target = start_target(kind, base, tree, workdir / f"{kind}-{case.replace(' ', '_')}.log")
    try:
        before = target.usage()
        sampler = Sampler(target.pid)
        outcome = CASES[case](target)
        recovered = target.served_within(30)
        time.sleep(0.3)
        sampler.stop()
        after = target.usage()
        return {
            "case": case,
            "target": kind,
            "during": outcome["during"],
            "recovered_s": recovered,
            "peak_rss_mib": (sampler.rss - before.rss) / MiB,
            "end_rss_mib": (after.rss - before.rss) / MiB,
            "threads": f"{before.threads}->{sampler.threads}",
            "cpu_s": after.cpu_s - before.cpu_s,
            "alive": process.poll() is None,
            "seen": outcome["seen"],
        }
    finally:
        process.kill()
        process.wait()


def grpcio_serve(argv: list[str]) -> None:
    """``serveprof serve`` with grpcio's server as the gRPC transport, on the same handlers."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from serveprof.server import grpc_api, main
    from serveprof.wire.status import ServingError

    class GrpcioServer:
        def __init__(self, methods, host, port, max_workers, max_message_bytes, unimplemented=None, limits=None):
            def handler(method):
                def call(request, context):
                    try:
                        return method(request)
                    except ServingError as error:
                        context.abort(grpc.StatusCode[error.code.name], error.message)

                return grpc.unary_unary_rpc_method_handler(call)

            services: dict[str, dict] = {}
            for path, method in methods.items():
                service, name = path.lstrip("/").split("/")
                services.setdefault(service, {})[name] = handler(method)
            self._server = grpc.server(
                ThreadPoolExecutor(max_workers=max_workers),
                options=[("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", -1)],
            )
            self._server.add_generic_rpc_handlers(
                tuple(grpc.method_handlers_generic_handler(service, handlers) for service, handlers in services.items())
            )
            self.port = self._server.add_insecure_port(f"{host}:{port}")

        def start(self) -> None:
            self._server.start()

        def stop(self, grace_s: float) -> threading.Event:
            return self._server.stop(grace_s)

    grpc_api.GrpcServer = GrpcioServer
    sys.exit(main.main(argv))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--targets", nargs="+", default=["serveprof", "grpcio"], choices=["serveprof", "grpcio", "tree"]
    )
    parser.add_argument("--tree", type=Path, help="a checkout whose server is the 'tree' target")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        base = workdir / MODEL
        subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.fixtures.tiny_models",
                "classifier",
                str(base / "1"),
                "--image-size",
                str(IMAGE),
            ],
            check=True,
            cwd=REPO,
            env=server_env(),
            capture_output=True,
        )
        print(
            f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f} before\n"
        )
        print(
            "| case | target | served during | served after (s) | peak RSS +MiB | RSS at end +MiB | threads | "
            "CPU s | alive | what the attacker saw |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = []
        for case in args.cases:
            for kind in args.targets:
                row = measure(kind, case, base, args.tree, workdir)
                rows.append(row)
                during = "-" if row["during"] is None else ("yes" if row["during"] else "**no**")
                after = "**>30**" if row["recovered_s"] is None else f"{row['recovered_s']:.2f}"
                print(
                    f"| {case} | {kind} | {during} | {after} | {row['peak_rss_mib']:.0f} | {row['end_rss_mib']:.0f} "
                    f"| {row['threads']} | {row['cpu_s']:.1f} | {'yes' if row['alive'] else '**no**'} | "
                    f"{row['seen']} |",
                    flush=True,
                )
        print(f"\nload average {os.getloadavg()[0]:.1f} after")
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--grpcio-serve":
        grpcio_serve(sys.argv[2:])
    else:
        main()
