"""serveprof's load generator beside Triton's perf_analyzer (``--service-kind=tfserving``), same server, same model.

    make perf            # once: the `perf` extra (perf_analyzer in .venv/bin) and a check for libb64-0d
    .venv/bin/python benchmarks/bench_perf_analyzer.py [--model tiny|compute] [--seconds 3] [--rounds 4] [--pin]
                                                       [--perf-analyzer PATH]

perf_analyzer is a C++ TF Serving client in the ``tritonclient`` wheel (the `perf` extra pins the newest
wheel that runs on Debian 12 with numpy 2). It needs ``libb64-0d`` (``apt-get install -y libb64-0d``) and
``libcudart.so.12`` even without a GPU; the latter comes from the ``nvidia-cuda-runtime-cu12`` wheel, whose
directory this script puts on perf_analyzer's ``LD_LIBRARY_PATH``.

One ``serveprof serve`` serves ``--model`` as model ``tiny`` over gRPC, batch 1: ``tiny`` the tiny classifier
(8x8x3 image, sub-millisecond requests), ``compute`` the tests' CPU-bound model (``x`` [1, 64], six 2048-wide
matmuls: milliseconds of TensorFlow work, one core per request as the tests serve it). At 1, 4 and 8 concurrent clients,
perf_analyzer (``--concurrency-range N:N``, time windows of ``--seconds``, its stability rule) and
``serveprof load --address`` (closed loop, windows of the same length, the same rule, builtin transport) take
turns, each going first in alternate rounds. Reported: each tool's throughput and p50 per round, their ratio
(serveprof / perf_analyzer) and its median over the rounds, and the foreign CPU during serveprof's windows.
``--pin`` keeps the server on CPU 0 and both tools on CPU 1, so a tool's own CPU costs the server nothing.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_load_generator import embedded_server, table  # noqa: E402

LEVELS = (1, 4, 8)
# The tests.fixtures.tiny_models fixture, the server's extra flags, and perf_analyzer's --shape (its tfserving mode
# sends the shape as given, batch dimension included; it writes float_val, serveprof tensor_content: same floats).
MODELS = {
    "tiny": ("classifier", (), "images:1,8,8,3"),
    "compute": (
        "cpu-bound",
        ("--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=2"),
        "x:1,64",
    ),
}


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


def pinned(cpus: set[int] | None):
    """A preexec_fn that keeps a tool (and every thread and process it starts) on ``cpus``."""
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def perf_analyzer(
    binary: Path,
    address: str,
    shape: str,
    clients: int,
    seconds: float,
    stability: float,
    scratch: Path,
    cpus: set[int] | None,
    zeros: bool = False,
) -> tuple[float, float]:
    """perf_analyzer's throughput and p50 (ms); NaN where it found no stable windows (it then reports nothing)."""
    out = scratch / f"pa-{clients}.csv"
    out.unlink(missing_ok=True)
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
            shape,
            "--measurement-interval",
            str(int(seconds * 1000)),
            "--stability-percentage",
            str(stability),
            "--input-data",
            "zero" if zeros else "random",
            "-f",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=cuda_runtime_env(),
        preexec_fn=pinned(cpus),
    )
    if "Failed to obtain stable measurement" in result.stdout + result.stderr:
        return float("nan"), float("nan")
    if result.returncode != 0:
        raise RuntimeError(result.stdout[-2000:] + result.stderr[-2000:])
    row = next(csv.DictReader(out.open()))
    return float(row["Inferences/Second"]), float(row["p50 latency"]) / 1000.0


def serveprof_load(
    address: str,
    pid: int,
    clients: int,
    seconds: float,
    stability: float,
    scratch: Path,
    cpus: set[int] | None,
    zeros: bool = False,
) -> tuple[float, float, dict]:
    """serveprof's throughput, p50 (ms) and the point's JSON (``--pid``: the server's CPU is not foreign load)."""
    summary = scratch / f"sp-{clients}.json"
    summary.unlink(missing_ok=True)
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
            "--pid",
            str(pid),
            "--load",
            json.dumps(
                {"window_s": seconds, "stable_windows": 3, "max_windows": 10, "warmup_s": 1, "stability_pct": stability}
            ),
            "--input",
            json.dumps({"kind": "zeros" if zeros else "random"}),
            "--requests-out",
            str(scratch / f"sp-{clients}.csv"),
            "--summary-out",
            str(summary),
        ],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=REPO,
        preexec_fn=pinned(cpus),
    )
    document = json.loads(summary.read_text())
    return document["stats"]["throughput_per_s"], document["stats"]["p50_ms"], document


def ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old == old and new == new else "n/a"  # NaN: perf_analyzer found no stable windows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--perf-analyzer",
        type=Path,
        default=Path(sys.executable).parent / "perf_analyzer",
        help="the perf_analyzer binary (default: the venv's, from `make perf`)",
    )
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="tiny",
        help="tiny: sub-millisecond requests (client cost shows); compute: milliseconds of TensorFlow per request",
    )
    parser.add_argument(
        "--zeros", action="store_true", help="both tools send zeros (default: each its own random values)"
    )
    parser.add_argument(
        "--levels", type=lambda text: tuple(int(n) for n in text.split(",")), default=LEVELS, help="e.g. 1,4,8"
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="window length for both tools")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--stability-pct", type=float, default=10, help="both tools' stability rule (perf_analyzer: 10)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server on CPU 0, the load tools on CPU 1: the tools' own CPU then costs the server nothing",
    )
    args = parser.parse_args()
    if not args.perf_analyzer.exists():
        raise SystemExit(f"no perf_analyzer at {args.perf_analyzer}: run `make perf`, or pass --perf-analyzer PATH")
    print(
        f"# {args.model} model, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} before, {'pinned' if args.pin else 'not pinned'}, "
        f"{args.seconds:g} s windows, stability {args.stability_pct:g} %, "
        f"{'zeros' if args.zeros else 'random values'}"
    )
    tools_cpus = {1} if args.pin else None
    rows = []
    ratios: dict[int, list[tuple[float, float]]] = {clients: [] for clients in args.levels}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        fixture, flags, shape = MODELS[args.model]
        server, address = embedded_server(scratch, fixture, flags)
        try:
            if args.pin:  # every thread of the running server (-a), and any it starts later
                subprocess.run(["taskset", "-a", "-cp", "0", str(server.pid)], check=True, capture_output=True)
            for round_ in range(args.rounds):
                for clients in args.levels:
                    order = ["perf_analyzer", "serveprof"]
                    if round_ % 2:
                        order.reverse()
                    for name in order:
                        if name == "perf_analyzer":
                            pa_rate, pa_p50 = perf_analyzer(
                                args.perf_analyzer,
                                address,
                                shape,
                                clients,
                                args.seconds,
                                args.stability_pct,
                                scratch,
                                tools_cpus,
                                args.zeros,
                            )
                        else:
                            sp_rate, sp_p50, document = serveprof_load(
                                address,
                                server.pid,
                                clients,
                                args.seconds,
                                args.stability_pct,
                                scratch,
                                tools_cpus,
                                args.zeros,
                            )
                    foreign = (document.get("disturbance") or {}).get("foreign_cpu_pct")
                    if pa_rate == pa_rate:
                        ratios[clients].append((sp_rate / pa_rate, sp_p50 / pa_p50))
                    rows.append(
                        [
                            round_,
                            clients,
                            pa_rate,
                            sp_rate,
                            ratio(sp_rate, pa_rate),
                            f"{pa_p50:.3f}",
                            f"{sp_p50:.3f}",
                            ratio(sp_p50, pa_p50),
                            "yes" if document.get("stable") else "no",
                            f"{foreign:.0f}" if foreign is not None else "n/a",
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
                "serveprof stable",
                "foreign CPU %",
            ],
            rows,
        )
    )
    print("\nmedian ratio serveprof / perf_analyzer over the rounds perf_analyzer settled in:")
    for clients, pairs in ratios.items():
        if pairs:
            print(
                f"  {clients} clients: throughput {statistics.median(p[0] for p in pairs):.2f}, "
                f"p50 {statistics.median(p[1] for p in pairs):.2f} ({len(pairs)} rounds)"
            )
        else:
            print(f"  {clients} clients: perf_analyzer settled in no round")
    print(f"\nload average {os.getloadavg()[0]:.1f} after, {time.strftime('%H:%M UTC', time.gmtime())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
