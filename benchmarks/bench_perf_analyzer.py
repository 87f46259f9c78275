"""serveprof's load generator beside Triton's perf_analyzer (``--service-kind=tfserving``), same server, same model.

    make perf            # once: the `perf` extra (perf_analyzer in .venv/bin) and a check for libb64-0d
    .venv/bin/python benchmarks/bench_perf_analyzer.py [--seconds 2] [--rounds 2] [--perf-analyzer PATH]

perf_analyzer is a C++ TF Serving client in the ``tritonclient`` wheel (the `perf` extra pins the newest
wheel that runs on Debian 12 with numpy 2). It needs ``libb64-0d`` (``apt-get install -y libb64-0d``) and
``libcudart.so.12`` even without a GPU; the latter comes from the ``nvidia-cuda-runtime-cu12`` wheel, whose
directory this script puts on perf_analyzer's ``LD_LIBRARY_PATH``.

One ``serveprof serve`` serves the tiny classifier (8x8x3, batch 1, gRPC). At 1, 4 and 8 concurrent clients,
perf_analyzer (``--concurrency-range N:N``, time windows of ``--seconds``, its stability rule) and
``serveprof load --address`` (closed loop, windows of the same length, the same rule, builtin transport) take
turns, each going first in alternate rounds. Reported: each tool's throughput and p50 per round and their
ratio (serveprof / perf_analyzer).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_load_generator import embedded_server, table  # noqa: E402

LEVELS = (1, 4, 8)


def cuda_runtime_env() -> dict[str, str]:
    """The environment perf_analyzer needs: libcudart.so.12 from the nvidia-cuda-runtime-cu12 wheel on its path."""
    spec = importlib.util.find_spec("nvidia.cuda_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "perf_analyzer needs libcudart.so.12, and nvidia-cuda-runtime-cu12 is not installed: make perf"
        )
    lib = Path(list(spec.submodule_search_locations)[0]) / "lib"
    path = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
    return dict(os.environ, LD_LIBRARY_PATH=path)


def perf_analyzer(
    binary: Path, address: str, clients: int, seconds: float, stability: float, scratch: Path
) -> tuple[float, float]:
    """perf_analyzer's throughput and p50 (ms); NaN where it found no stable windows (it then reports nothing)."""
    out = scratch / f"pa-{clients}.csv"
    result = subprocess.run(
        [
            str(binary),
            "-m",
            "tiny",
            "--service-kind=tfserving",
            "-i",
            "grpc",
            "-u",
            address,
            "--concurrency-range",
            f"{clients}:{clients}",
            "--shape",
            "images:1,8,8,3",  # tfserving mode sends the shape as given, batch dimension included
            "--measurement-interval",
            str(int(seconds * 1000)),
            "--stability-percentage",
            str(stability),
            "-f",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=cuda_runtime_env(),
    )
    if "Failed to obtain stable measurement" in result.stdout + result.stderr:
        return float("nan"), float("nan")
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    row = next(csv.DictReader(out.open()))
    return float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000.0


def serveprof_load(address: str, clients: int, seconds: float, stability: float, scratch: Path) -> tuple[float, float]:
    summary = scratch / f"sp-{clients}.json"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "serveprof"),
            "load",
            "--model",
            "tiny",
            "--scenario",
            "closed",
            "--point",
            f"c{clients}",
            "--address",
            address,
            "--load",
            json.dumps(
                {"window_s": seconds, "stable_windows": 3, "max_windows": 10, "warmup_s": 1, "stability_pct": stability}
            ),
            "--requests-out",
            str(scratch / f"sp-{clients}.csv"),
            "--summary-out",
            str(summary),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=REPO,
    )
    stats = json.loads(summary.read_text())["stats"]
    return stats["throughput_per_s"], stats["p50_ms"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--perf-analyzer",
        type=Path,
        default=Path(sys.executable).parent / "perf_analyzer",
        help="the perf_analyzer binary (default: the venv's, from `make perf`)",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="window length for both tools")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--stability-pct", type=float, default=10, help="both tools' stability rule (perf_analyzer: 10)"
    )
    args = parser.parse_args()
    if not args.perf_analyzer.exists():
        raise SystemExit(f"no perf_analyzer at {args.perf_analyzer}: run `make perf`, or pass --perf-analyzer PATH")
    print(
        f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} before"
    )
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        server, address = embedded_server(scratch)
        try:
            for round_ in range(args.rounds):
                for clients in LEVELS:
                    tools = [("perf_analyzer", perf_analyzer), ("serveprof", None)]
                    if round_ % 2:
                        tools.reverse()
                    measured = {}
                    for name, _ in tools:
                        if name == "perf_analyzer":
                            measured[name] = perf_analyzer(
                                args.perf_analyzer, address, clients, args.seconds, args.stability_pct, scratch
                            )
                        else:
                            measured[name] = serveprof_load(address, clients, args.seconds, args.stability_pct, scratch)
                    (pa_rate, pa_p50), (sp_rate, sp_p50) = measured["perf_analyzer"], measured["serveprof"]
                    rows.append(
                        [
                            round_,
                            clients,
                            pa_rate,
                            sp_rate,
                            f"{sp_rate / pa_rate:.2f}",
                            f"{pa_p50:.3f}",
                            f"{sp_p50:.3f}",
                            f"{sp_p50 / pa_p50:.2f}",
                        ]
                    )
        finally:
            server.terminate()
            server.wait(10)
    print()
    print(
        table(
            [
                "round",
                "clients",
                "perf_analyzer /s",
                "serveprof /s",
                "ratio",
                "perf_analyzer p50 ms",
                "serveprof p50 ms",
                "ratio",
            ],
            rows,
        )
    )
    print(f"\nload average {os.getloadavg()[0]:.1f} after")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
