"""The measuring client's own cost per request, gRPC (prepared bytes) beside REST.

A latency the pipeline reports is the time around ``client.send``. The part of it that
the client spends, rather than the server, should be negligible: the target is at most
0.1 ms of client CPU per request. This script serves the tiny classifier (batch 1) on
the embedded server and, for each protocol in alternating rounds (the machine is
shared, so the two are compared within one run), sends ``--requests`` prepared
requests and reports:

- requests per second (wall clock over the send loop);
- median latency per request;
- client CPU per request, from ``time.thread_time_ns()`` of the sending thread around
  the loop, divided by the number of requests. It covers everything the calling thread
  executes: the Python client code, serialization left to do per call, and the
  syscalls it makes (socket writes and reads, waits that spin). It leaves out the
  server, and the gRPC core's own background threads, which is what
- process CPU per request (``time.process_time_ns()``, all client threads) adds back.

Run: .venv/bin/python benchmarks/bench_client_cost.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
IMAGE_SIZE = 8
TARGET_CLIENT_MS = 0.1


def export_model(base: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fixtures.tiny_models",
            "classifier",
            str(base / "1"),
            "--image-size",
            str(IMAGE_SIZE),
        ],
        check=True,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        timeout=300,
    )


def one_round(client, request, requests: int) -> dict:
    send = client.send
    latencies = []
    wall0, thread0, process0 = time.perf_counter_ns(), time.thread_time_ns(), time.process_time_ns()
    for _ in range(requests):
        start = time.perf_counter_ns()
        send(request)
        latencies.append(time.perf_counter_ns() - start)
    wall, thread, process = (
        time.perf_counter_ns() - wall0,
        time.thread_time_ns() - thread0,
        time.process_time_ns() - process0,
    )
    return {
        "requests_per_s": requests / (wall / 1e9),
        "median_ms": statistics.median(latencies) / 1e6,
        "client_thread_ms": thread / requests / 1e6,
        "client_process_ms": process / requests / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    from serveprof.launch import ServerSpec, launch
    from serveprof.measure.session import make_client
    from serveprof.settings import server_settings

    inputs = {"images": np.random.default_rng(0).uniform(0, 255, (1, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)}
    # (protocol, measure.transport) per row: "builtin" is the default the pipeline measures
    # with, "library" (grpcio, requests) sends the same bytes through the usual stacks.
    rows = {
        "grpc": ("grpc", "builtin"),
        "grpc via grpcio": ("grpc", "library"),
        "rest": ("rest", "builtin"),
        "rest via requests": ("rest", "library"),
    }
    results: dict[str, list[dict]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / MODEL
        export_model(base)
        spec = ServerSpec.serving(
            server_settings({"backend": "embedded"}), MODEL, str(base), log_path=str(Path(scratch) / "server.log")
        )
        with launch(spec) as server:
            address = {"grpc": server.grpc_target, "rest": server.rest_url}
            clients = {
                name: make_client(protocol, address[protocol], MODEL, transport)
                for name, (protocol, transport) in rows.items()
            }
            prepared = {name: client.prepare(inputs) for name, client in clients.items()}
            for name, client in clients.items():
                for _ in range(args.warmup):
                    client.send(prepared[name])
            for _ in range(args.rounds):
                for name, client in clients.items():  # alternate, so drift in machine load hits both
                    results[name].append(one_round(client, prepared[name], args.requests))
            info = server.info

    print(
        f"server: {info.get('backend')} {info.get('version')}; model: tiny classifier, batch 1, "
        f"{args.requests} requests x {args.rounds} rounds per protocol (medians over rounds)"
    )
    print(
        "| protocol | requests/s | median latency (ms) | client thread CPU / request (ms) | client process CPU / request (ms) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, rounds in results.items():
        median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        print(
            f"| {name} | {median['requests_per_s']:.0f} | {median['median_ms']:.3f} | {median['client_thread_ms']:.4f} | {median['client_process_ms']:.4f} |"
        )
    measuring = [rounds for name, rounds in results.items() if rows[name][1] == "builtin"]
    worst = max(statistics.median(r["client_thread_ms"] for r in rounds) for rounds in measuring)
    print(
        f"target: client thread CPU <= {TARGET_CLIENT_MS} ms per request for the default (builtin) clients: "
        f"{'met' if worst <= TARGET_CLIENT_MS else 'NOT met'} (worst {worst:.4f} ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
