"""What the disturbance sampler reads on a quiet and on a disturbed series, and what it costs.

Each round times two series of ``--seconds`` each, in turn (the machine is shared, so
the two are compared within one run):

- quiet: a stand-in "server" (a busy loop) runs and is passed as one of our own pids,
  the client (this process) sleeps;
- disturbed: the same, plus a second busy loop that is *not* ours (another user's job).

It prints, per series, the foreign CPU (% of one core), its peak window, the steal
(% of machine time), the memory stall share (PSI) and the sampler thread's own CPU
per second, then the medians. The defaults in serveprof/measure/disturbance.py
(``MAX_FOREIGN_CPU_PCT``, ``MAX_STEAL_PCT``) were chosen from these figures.

Run: .venv/bin/python benchmarks/bench_disturbance.py [--rounds 5] [--seconds 5] [--interval 0.5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

from serveprof.measure.disturbance import DisturbanceSampler, Limits

SPIN = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def spin(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=seconds)])


def series(seconds: float, interval: float, disturbed: bool) -> dict:
    server = spin(seconds + 5)
    intruder = spin(seconds + 5) if disturbed else None
    try:
        time.sleep(0.3)  # both loops running before the series starts
        sampler = DisturbanceSampler(trees=[server.pid], interval_s=interval, limits=Limits())
        sampler.start()
        # The sampler thread's own CPU, from /proc/self/task/<tid>/stat.
        tids = [thread.native_id for thread in threading.enumerate() if thread.name == "serveprof-disturbance"]
        before = _thread_seconds(tids)
        time.sleep(seconds)
        after = _thread_seconds(tids)
        sampler.stop()
        summary = sampler.summary()
        summary["sampler_cpu_pct"] = 100.0 * (after - before) / seconds
        return summary
    finally:
        for process in (server, intruder):
            if process is not None:
                process.kill()
                process.wait()


def _thread_seconds(tids: list[int]) -> float:
    total = 0.0
    for tid in tids:
        try:
            fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def row(label: str, summary: dict) -> str:
    memory = summary["memory_pressure"]
    some = memory.get("some_pct")
    return (
        f"{label:9s} foreign {summary['foreign_cpu_pct']:6.1f} %  peak {summary['foreign_cpu_peak_pct'] or 0:6.1f} %  "
        f"own {summary['own_cpu_pct']:6.1f} %  steal {summary['steal_pct']:5.2f} %  irq {summary['irq_pct']:4.1f} %  "
        f"mem-some {some if some is not None else float('nan'):5.2f} %  sampler {summary['sampler_cpu_pct']:4.2f} %  "
        f"flagged {summary['flagged']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.rounds} rounds of {args.seconds:g} s, interval {args.interval:g} s")
    results = {"quiet": [], "disturbed": []}
    for round_ in range(args.rounds):
        for label in ("quiet", "disturbed") if round_ % 2 == 0 else ("disturbed", "quiet"):
            summary = series(args.seconds, args.interval, disturbed=label == "disturbed")
            results[label].append(summary)
            print(row(label, summary), flush=True)
    print("\nmedians:")
    for label, summaries in results.items():
        keys = ("foreign_cpu_pct", "foreign_cpu_peak_pct", "steal_pct", "irq_pct", "sampler_cpu_pct")
        medians = {key: statistics.median(s[key] or 0.0 for s in summaries) for key in keys}
        flagged = sum(s["flagged"] for s in summaries)
        print(
            f"{label:9s} "
            + "  ".join(f"{key} {value:.2f}" for key, value in medians.items())
            + f"  flagged {flagged}/{len(summaries)}"
        )


if __name__ == "__main__":
    main()
