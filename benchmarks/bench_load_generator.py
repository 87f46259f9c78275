"""The load generator's ceiling, with both transports, beside what the embedded server can serve.

    .venv/bin/python benchmarks/bench_load_generator.py [--seconds 3] [--rounds 2]

1. **Capacity**: ``serveprof serve`` on the tiny classifier (8x8x3 images, batch 1) under
   closed-loop load at 1, 2, 4 and 8 clients; the highest answered rate is what the
   embedded server can serve here.
2. **Ceiling**: the same generator (serveprof.load.generator: worker processes, one
   lean connection per thread) against a server that answers every Predict at once with
   a canned PredictResponse (benchmarks/bench_transports.py's ``serveprof`` server, in its
   own process), so what limits the rate is the generator and the transport:
   - open loop, constant arrivals at 1x, 3x and 5x the capacity, 32 connections: the
     rate sent, the share of sends the generator itself made late (by more than 1 ms,
     while a connection was free; load.schedule_tolerance_ms), and the share that waited
     for a free connection;
   - closed loop at 16 clients: the most answers per second the generator collects.
   Transports ``builtin`` (serveprof's HTTP/2 client) and ``library`` (grpcio) alternate
   within each round, so the shared machine's noise falls on both.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_transports import free_port  # noqa: E402
from bench_transports import start as start_canned  # noqa: E402

from serveprof.load.generator import LoadGenerator  # noqa: E402
from serveprof.load.scenarios import processes_for  # noqa: E402
from serveprof.load.worker import RECORD_FIELDS, WorkerPlan  # noqa: E402
from tests.fixtures.attacks import predict_request  # noqa: E402

DUE, TAKEN, SENT, DONE = (RECORD_FIELDS.index(name) for name in ("due_ns", "taken_ns", "sent_ns", "done_ns"))
TOLERANCE_NS = 1_000_000
TRANSPORTS = ("builtin", "library")
CPUS = len(os.sched_getaffinity(0))


def plans(address: str, request: bytes, transport: str, connections: int, mode: str, rate: float | None):
    processes = processes_for(connections, 0, CPUS)
    shares = [connections // processes + (1 if index < connections % processes else 0) for index in range(processes)]
    return [
        WorkerPlan(
            protocol="grpc",
            transport=transport,
            address=address,
            model="tiny",
            request=request,
            connections=share,
            mode=mode,
            rate_per_s=rate,
            arrival="constant",
            worker=index,
            workers=processes,
        )
        for index, share in enumerate(shares)
    ]


def run(worker_plans: list[WorkerPlan], seconds: float, warmup_s: float = 0.5) -> dict:
    """Load for ``warmup_s + seconds``; figures over the last ``seconds``."""
    with LoadGenerator(worker_plans) as generator:
        begin = time.monotonic_ns() + 200_000_000
        start = begin + int(warmup_s * 1e9)
        end = start + int(seconds * 1e9)
        generator.begin(begin)
        while generator.answers.covered() < end:
            generator.receive(0.1)
        generator.stop()
        table = generator.answers.table()
    sent = table[(table[:, SENT] >= start) & (table[:, SENT] < end)]
    done = table[(table[:, DONE] >= start) & (table[:, DONE] < end)]
    late = (sent[:, TAKEN] <= sent[:, DUE]) & (sent[:, SENT] - sent[:, DUE] > TOLERANCE_NS)
    queued = sent[:, TAKEN] > sent[:, DUE]
    return {
        "sent_per_s": len(sent) / seconds,
        "answered_per_s": len(done) / seconds,
        "late_pct": 100.0 * late.mean() if len(sent) else float("nan"),
        "queued_pct": 100.0 * queued.mean() if len(sent) else float("nan"),
        "p50_ms": float(np.median(done[:, DONE] - done[:, SENT])) / 1e6 if len(done) else float("nan"),
    }


def embedded_server(
    scratch: Path, fixture: str = "classifier", flags: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str]:
    """``serveprof serve`` of a tests.fixtures.tiny_models ``fixture`` as model ``tiny``, with extra ``flags``."""
    base = scratch / "tiny"
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", fixture, str(base / "1")],
        check=True,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        timeout=300,
    )
    port = free_port()
    log = (scratch / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "serveprof"),
            "serve",
            f"--port={port}",
            "--model_name=tiny",
            f"--model_base_path={base}",
            *flags,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    from serveprof.client import GrpcClient

    deadline = time.monotonic() + 180
    while True:
        try:
            GrpcClient(f"127.0.0.1:{port}", "tiny").signature()
            break
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the embedded server did not start; see {scratch / 'server.log'}") from None
            time.sleep(0.5)
    return process, f"127.0.0.1:{port}"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(f"{cell:.1f}" if isinstance(cell, float) else str(cell) for cell in row) + " |"
        for row in rows
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds; the transports alternate within each")
    args = parser.parse_args()
    request = predict_request("tiny", [1, 8, 8, 3], content=b"\0" * (8 * 8 * 3 * 4))
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.processor() or platform.machine()}, "
        f"{CPUS} CPUs, load average {os.getloadavg()[0]:.1f} before"
    )
    capacity_rows, capacity = [], {transport: 0.0 for transport in TRANSPORTS}
    with tempfile.TemporaryDirectory() as scratch:
        server, address = embedded_server(Path(scratch))
        try:
            for round_ in range(args.rounds):
                order = TRANSPORTS if round_ % 2 == 0 else TRANSPORTS[::-1]
                for clients in (1, 2, 4, 8):
                    for transport in order:
                        figures = run(plans(address, request, transport, clients, "closed", None), args.seconds)
                        capacity[transport] = max(capacity[transport], figures["answered_per_s"])
                        capacity_rows.append(
                            [round_, transport, clients, figures["answered_per_s"], f"{figures['p50_ms']:.3f}"]
                        )
        finally:
            server.terminate()
            server.wait(10)
    print("\n## Embedded server, tiny classifier, batch 1, closed loop\n")
    print(table(["round", "transport", "clients", "answers/s", "p50 ms"], capacity_rows))
    served = max(capacity.values())
    print(f"\ncapacity: {served:.0f} answers/s (the highest of either transport)")

    canned, port = start_canned("serveprof")
    address = f"127.0.0.1:{port}"
    ceiling_rows = []
    try:
        for round_ in range(args.rounds):
            order = TRANSPORTS if round_ % 2 == 0 else TRANSPORTS[::-1]
            for factor in (1, 3, 5):
                for transport in order:
                    figures = run(plans(address, request, transport, 32, "open", factor * served), args.seconds)
                    ceiling_rows.append(
                        [
                            round_,
                            transport,
                            f"open {factor}x = {factor * served:.0f}/s",
                            figures["sent_per_s"],
                            f"{figures['late_pct']:.2f}",
                            f"{figures['queued_pct']:.2f}",
                            f"{figures['p50_ms']:.3f}",
                        ]
                    )
            for transport in order:
                figures = run(plans(address, request, transport, 16, "closed", None), args.seconds)
                ceiling_rows.append(
                    [
                        round_,
                        transport,
                        "closed 16 clients",
                        figures["answered_per_s"],
                        "",
                        "",
                        f"{figures['p50_ms']:.3f}",
                    ]
                )
    finally:
        canned.terminate()
        canned.wait(10)
    print("\n## Generator against a canned-answer server (serveprof's gRPC transport)\n")
    print(
        table(
            [
                "round",
                "transport",
                "load",
                "sent/s (closed: answers/s)",
                "late %",
                "waited for a connection %",
                "p50 ms",
            ],
            ceiling_rows,
        )
    )
    print(f"\nload average {os.getloadavg()[0]:.1f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
