"""Soak the embedded server: many concurrent clients, mixed gRPC and REST, for a fixed time.

    .venv/bin/python benchmarks/soak_server.py --clients 32 --seconds 60 [--json soak.json]

Builds the tiny test classifier, starts one ``serveprof serve`` through the launcher and
runs ``--clients`` threads (even-numbered ones on gRPC, odd ones on REST), each with its
own client, sending batch-1 predicts back to back. Every answer is compared with the
server's first answer for the same input, so a wrong result counts as an error just
like an exception. The server's RSS is read after ``--warmup`` seconds and at the end.
Prints one JSON object (requests, errors, latency statistics, RSS) and exits 1 if any
request failed. tests/test_soak_server.py runs this and asserts on its output.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
MODEL = "tiny"
IMAGE = 8
INPUT = "images"
OUTPUT = "probabilities"
MIB = 1 << 20


class Worker(threading.Thread):
    """One client on one protocol, sending until told to stop."""

    def __init__(self, client, protocol: str, images: np.ndarray, expected: np.ndarray, stop: threading.Event):
        super().__init__(daemon=True)
        self.client, self.protocol = client, protocol
        self.images, self.expected, self.stop = images, expected, stop
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter_ns()
            try:
                output = self.client.predict({INPUT: self.images})[OUTPUT]
                elapsed_ms = (time.perf_counter_ns() - started) / 1e6
                if not np.allclose(output, self.expected, rtol=1e-5, atol=1e-6):
                    raise AssertionError(f"wrong answer {output!r}, expected {self.expected!r}")
                self.latencies_ms.append(elapsed_ms)
            except Exception as error:  # counted, not raised: the soak reports every failure
                self.errors.append(f"{self.protocol}: {type(error).__name__}: {error}"[:500])


def export_tiny_classifier(base: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "classifier", str(base / "1"), "--image-size", str(IMAGE)],
        check=True,
        cwd=REPO,
        env=env,
        timeout=300,
        capture_output=True,
    )


def soak(model_base: Path, log_path: Path, clients: int, seconds: float, warmup_s: float) -> dict:
    from serveprof.client import GrpcClient, RestClient
    from serveprof.launch import ServerSpec, launch
    from serveprof.measure.stats import latency_stats
    from serveprof.settings import server_settings

    spec = ServerSpec.serving(
        server_settings({"backend": "embedded", "startup_timeout_s": 180}), MODEL, str(model_base), str(log_path)
    )
    images = np.random.default_rng(0).random((1, IMAGE, IMAGE, 3), dtype=np.float32)
    with launch(spec) as server:
        server_process = psutil.Process(server.pid)
        expected = RestClient(server.rest_url, MODEL).predict({INPUT: images})[OUTPUT]
        stop = threading.Event()
        workers = [
            Worker(GrpcClient(server.grpc_target, MODEL), "grpc", images, expected, stop)
            if index % 2 == 0
            else Worker(RestClient(server.rest_url, MODEL), "rest", images, expected, stop)
            for index in range(clients)
        ]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        time.sleep(warmup_s)
        rss_after_warmup = server_process.memory_info().rss
        rss_peak = rss_after_warmup
        while time.monotonic() - started < seconds:
            time.sleep(min(1.0, max(0.0, seconds - (time.monotonic() - started))))
            rss_peak = max(rss_peak, server_process.memory_info().rss)
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
        elapsed = time.monotonic() - started
        hung = [worker.protocol for worker in workers if worker.is_alive()]
        rss_end = server_process.memory_info().rss
        server.check_alive()

    latencies = [value for worker in workers for value in worker.latencies_ms]
    errors = [message for worker in workers for message in worker.errors] + [
        f"{p}: client still waiting after stop" for p in hung
    ]
    stats = latency_stats(latencies, batch_size=1) if latencies else {}
    return {
        "clients": clients,
        "grpc_clients": sum(worker.protocol == "grpc" for worker in workers),
        "rest_clients": sum(worker.protocol == "rest" for worker in workers),
        "seconds": round(elapsed, 1),
        "warmup_s": warmup_s,
        "requests": len(latencies) + len(errors),
        "requests_grpc": sum(len(w.latencies_ms) + len(w.errors) for w in workers if w.protocol == "grpc"),
        "requests_rest": sum(len(w.latencies_ms) + len(w.errors) for w in workers if w.protocol == "rest"),
        "requests_min_per_client": min(len(worker.latencies_ms) for worker in workers),
        "requests_per_s": round((len(latencies) + len(errors)) / elapsed, 1),
        "errors": len(errors),
        "error_samples": errors[:5],
        "p50_ms": stats.get("p50_ms"),
        "p99_ms": stats.get("p99_ms"),
        "max_ms": stats.get("max_ms"),
        "p50_ms_grpc": _p50(workers, "grpc"),
        "p50_ms_rest": _p50(workers, "rest"),
        "rss_after_warmup_mib": round(rss_after_warmup / MIB, 1),
        "rss_end_mib": round(rss_end / MIB, 1),
        "rss_peak_mib": round(rss_peak / MIB, 1),
        "rss_growth_mib": round((rss_end - rss_after_warmup) / MIB, 1),
    }


def _p50(workers: list[Worker], protocol: str) -> float | None:
    values = sorted(value for worker in workers if worker.protocol == protocol for value in worker.latencies_ms)
    return values[(len(values) - 1) // 2] if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0, help="total run time, warm-up included")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before the first RSS reading")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.clients < 2 or args.warmup >= args.seconds:
        parser.error("need at least 2 clients (one per protocol) and a warm-up shorter than the run")
    with tempfile.TemporaryDirectory(prefix="serveprof-soak-") as scratch:
        base = Path(scratch) / "models" / MODEL
        export_tiny_classifier(base)
        result = soak(base, Path(scratch) / "server.log", args.clients, args.seconds, args.warmup)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        from serveprof.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
