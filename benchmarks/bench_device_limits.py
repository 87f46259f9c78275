"""How much a device's CPU limit slows a CPU-bound model: 1 CPU against 2, alternated, as a ratio of medians.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_device_limits.py [--rounds 3] [--batch 32] [--cpus 1 2]

Each round measures the CPU-bound test model (tests/fixtures/tiny_models.py,
``export_cpu_bound_model``) once per ``--cpus`` value, in alternating order, each on a
fresh embedded server in its own cgroup (``serveprof measure --device``), and prints
each series' mean, the median per CPU count, and each count's median over the first's.
Needs root and the cpu and cpuset cgroup controllers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def measure(base: Path, cpus: float, batch: int, out: Path) -> float:
    device = json.dumps({"name": f"c{cpus:g}", "cpus": cpus})
    stats = out / f"c{cpus:g}.json"
    command = [sys.executable, "-m", "serveprof", "measure", "--model", "cpu", "--model-base-path", str(base),
               "--server", '{"backend": "embedded", "startup_timeout_s": 180}', "--batch-size", str(batch),
               "--requests", "40", "--max-seconds", "30", "--min-requests", "5", "--warmup-requests", "3",
               "--warmup-max-seconds", "20", "--input", '{"kind": "random"}', "--device", device,
               "--latencies", str(out / f"c{cpus:g}.csv"), "--stats", str(stats)]  # fmt: skip
    subprocess.run(command, check=True, cwd=REPO, env=ENV, capture_output=True, timeout=600)
    document = json.loads(stats.read_text())
    assert document["limits"]["cpu_enforced"], document["limits"]
    return document["stats"]["mean_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--cpus", type=float, nargs="+", default=[1.0, 2.0])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch) / "cpu"
        code = "import sys; from tests.fixtures.tiny_models import export_cpu_bound_model as e; e(sys.argv[1])"
        subprocess.run(
            [sys.executable, "-c", code, str(base / "1")], check=True, cwd=REPO, env=ENV, capture_output=True
        )
        means: dict[float, list[float]] = {cpus: [] for cpus in args.cpus}
        for round_ in range(args.rounds):
            order = args.cpus if round_ % 2 == 0 else list(reversed(args.cpus))
            for cpus in order:
                means[cpus].append(measure(base, cpus, args.batch, Path(scratch)))
                print(f"round {round_ + 1}: {cpus:g} CPU(s): mean {means[cpus][-1]:.1f} ms", flush=True)
    first = statistics.median(means[args.cpus[0]])
    for cpus, values in means.items():
        median = statistics.median(values)
        # A round's two series ran back to back, so their ratio cancels most of a shared machine's drift.
        paired = statistics.median(a / b for a, b in zip(means[args.cpus[0]], values, strict=True))
        print(f"{cpus:g} CPU(s): median of means {median:.1f} ms, {median / first:.2f}x {args.cpus[0]:g} CPU(s);"
              f" median per-round {args.cpus[0]:g}-CPU/{cpus:g}-CPU ratio {paired:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
