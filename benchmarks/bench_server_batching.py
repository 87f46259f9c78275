"""Server-side batching against none: 8 concurrent batch-1 clients, throughput and latency side by side.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_server_batching.py [--seconds 20] [--repeats 2]

Exports MobileNetV2 (random weights, 224x224, ``--alpha``) as ``serveprof export`` does,
starts two ``serveprof serve`` subprocesses, one plain and one with ``--enable_batching``
and a BatchingParameters file (``--max-batch-size``, ``--timeout-us``,
``--batch-threads``), and drives each in turn with ``--clients`` closed-loop clients
(each sends its next batch-1 Predict as soon as its previous answer arrives), for
``--seconds`` per turn, alternating the two servers ``--repeats`` times because the
machine is shared and its load drifts. Reported per server: requests per second, and
the median and p99 of the client-side latencies pooled over its turns; the batch sizes
the batching server executed come from its own metrics page.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_server_overhead import cpu_model, export_mobilenet  # noqa: E402
from tests.fixtures.embedded_server import running_server  # noqa: E402


def drive(target: str, model: str, clients: int, seconds: float, image: np.ndarray) -> tuple[int, list[float], float]:
    """``clients`` threads, each sending batch-1 Predicts back to back for ``seconds``: (answers, latencies ms, span s)."""
    from serveprof.client import GrpcClient

    connections = []
    for _ in range(clients):
        client = GrpcClient(target, model, timeout_s=120)
        prepared = client.prepare({"images": image})
        client.connect()
        client.send(prepared)  # connected and answered once before the clock starts
        connections.append((client, prepared))
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def loop(index: int) -> None:
        client, prepared = connections[index]
        start.wait()
        while time.perf_counter() < stop_at[0]:
            began = time.perf_counter()
            client.send(prepared)
            latencies[index].append((time.perf_counter() - began) * 1e3)

    threads = [threading.Thread(target=loop, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    span = time.perf_counter() - began
    for client, _ in connections:
        client.close()
    pooled = [value for per_client in latencies for value in per_client]
    return len(pooled), pooled, span


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of one turn")
    parser.add_argument("--repeats", type=int, default=2, help="turns per server, alternated")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--timeout-us", type=int, default=2000, help="batch_timeout_micros")
    parser.add_argument("--batch-threads", type=int, default=1, help="num_batch_threads")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_batching_") as scratch:
        root = Path(scratch)
        export_mobilenet(root / "mnv2" / "1", args.alpha)
        parameters = root / "batching.txt"
        parameters.write_text(
            f"max_batch_size {{ value: {args.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {args.timeout_us} }}\n"
            f"num_batch_threads {{ value: {args.batch_threads} }}\n"
            f"max_enqueued_batches {{ value: 100 }}\n"
        )
        monitoring = root / "monitoring.txt"
        monitoring.write_text("prometheus_config { enable: true }\n")
        results: dict[str, dict] = {
            "batching off": {"n": 0, "span": 0.0, "latencies": []},
            "batching on": {"n": 0, "span": 0.0, "latencies": []},
        }
        with (
            running_server(root / "mnv2", model_name="mnv2", log_dir=root) as plain,
            running_server(
                root / "mnv2",
                "--enable_batching",
                f"--batching_parameters_file={parameters}",
                f"--monitoring_config_file={monitoring}",
                model_name="mnv2",
                log_dir=root,
            ) as batching,
        ):
            servers = {"batching off": plain, "batching on": batching}
            for server in servers.values():  # warm both before any turn counts
                drive(server.grpc_target, "mnv2", args.clients, 2.0, image)
            for _ in range(args.repeats):
                for name, server in servers.items():
                    count, latencies, span = drive(server.grpc_target, "mnv2", args.clients, args.seconds, image)
                    results[name]["n"] += count
                    results[name]["span"] += span
                    results[name]["latencies"] += latencies
            executed = executed_batch_sizes(batching.rest_url)
    load_after = os.getloadavg()
    print("| server | requests | requests/s | median ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for name, result in results.items():
        print(
            f"| {name} | {result['n']} | {result['n'] / result['span']:.1f} | "
            f"{statistics.median(result['latencies']):.1f} | {p99(result['latencies']):.1f} |"
        )
    print()
    print(f"batches executed by the batching server (size: count, warm-up turns included): {executed}")
    print(
        f"settings: {args.clients} clients, MobileNetV2 alpha {args.alpha} 224x224 batch 1, max_batch_size "
        f"{args.max_batch_size}, batch_timeout_micros {args.timeout_us}, num_batch_threads {args.batch_threads}, "
        f"{args.repeats} alternated turns of {args.seconds:g} s per server"
    )
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {cpu_model()}, {os.cpu_count()} cores; "
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}"
    )
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    return 0


def executed_batch_sizes(rest_url: str) -> dict[str, int]:
    from serveprof.client.server_metrics import DEFAULT_PATH, parse, scrape

    snapshot = parse(scrape(rest_url + DEFAULT_PATH))
    return {
        labels["execution_batch_size"]: int(value)
        for labels, value in snapshot.samples(":tensorflow:serving:batching_session:padding_size", "_count")
    }


if __name__ == "__main__":
    sys.exit(main())
