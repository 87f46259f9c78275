"""The disturbance sampler on real processes: a busy loop that is ours, and one that is not.

The machine is shared (other test runs use its two cores at the same time), so no test
here assumes a quiet machine. A disturbed series is flagged whatever else runs: the
busy loop's own CPU is foreign, and so is anyone else's. The undisturbed case is the
*same* window read by a second sampler that counts the busy loop as ours (a server at
full load): whatever the rest of the machine does is seen identically by both, so the
difference between the two is the accounting under test, not the background.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from serveprof.errors import ServeprofError
from serveprof.measure.disturbance import (
    CLOCK_TICKS,
    DisturbanceSampler,
    Limits,
    MemoryProbe,
    parse_proc_stat,
    parse_psi,
    parse_vmstat,
    reasons,
)  # fmt: skip

SPIN = "import time\nprint('ready', flush=True)\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\n"
# A "server" whose work is done by a child: the sampler must follow the tree.
PARENT = (
    "import subprocess, sys\n"
    f"child = subprocess.Popen([sys.executable, '-c', {SPIN!r}], stdout=subprocess.PIPE, text=True)\n"
    "print(child.stdout.readline().strip(), flush=True)\nchild.wait()\n"
)
WINDOW_S = 2.0


@pytest.fixture
def spawn():
    started: list[subprocess.Popen] = []

    def start(code: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "ready"
        return process

    yield start
    for process in started:
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for member in reversed(tree):
            member.kill()
        process.wait(timeout=10)
        process.stdout.close()


def cpu_pct(process: psutil.Process, seconds_before: float, wall: float) -> float:
    times = process.cpu_times()
    return 100.0 * (times.user + times.system - seconds_before) / wall


def test_a_busy_loop_that_is_not_ours_flags_the_series(spawn):
    intruder = psutil.Process(spawn(SPIN).pid)
    started = time.monotonic()
    before = sum(intruder.cpu_times()[:2])
    with DisturbanceSampler(trees=[], interval_s=0.2) as sampler:
        time.sleep(WINDOW_S)
    used = cpu_pct(intruder, before, time.monotonic() - started)
    summary = sampler.summary()
    assert summary["flagged"], summary
    # Foreign CPU includes the intruder's, whatever else the machine did meanwhile.
    assert summary["foreign_cpu_pct"] >= used - 10
    assert used > 5  # it really ran (on 2 cores shared with other test runs, maybe far from a full core)
    assert summary["reasons"][0].startswith("other processes used")
    assert intruder.pid in [entry["pid"] for entry in summary["top_foreign"]] or summary["foreign_cpu_pct"] > 150
    assert summary["samples"] >= 5 and summary["wall_s"] == pytest.approx(WINDOW_S, abs=0.5)
    json.dumps(summary, allow_nan=False)  # ready for the stats JSON, whose writer refuses NaN


def test_the_same_load_counted_as_ours_is_not_a_disturbance(spawn):
    """Two samplers over one window: the busy server tree is ours for one, foreign for the other."""
    server = spawn(PARENT)  # the busy loop is the parent's child
    worker = psutil.Process(server.pid).children()[0]
    started = time.monotonic()
    before = sum(worker.cpu_times()[:2])
    ours = DisturbanceSampler(trees=[server.pid], interval_s=0.2).start()
    theirs = DisturbanceSampler(trees=[], interval_s=0.2, name_processes=False).start()
    time.sleep(WINDOW_S)
    theirs.stop()
    ours.stop()
    used = cpu_pct(worker, before, time.monotonic() - started)
    quiet, busy = ours.summary(), theirs.summary()
    assert used > 5
    assert quiet["own_cpu_pct"] >= used - 15  # the child's CPU is the server's
    assert busy["foreign_cpu_pct"] - quiet["foreign_cpu_pct"] == pytest.approx(used, abs=20)
    # A limit halfway between what the background gave and what the busy loop adds:
    # the series whose busy loop is the server passes, the one where it is someone else's does not.
    limits = Limits(max_foreign_cpu_pct=quiet["foreign_cpu_pct"] + used / 2, max_steal_pct=None)
    assert reasons(quiet, limits) == []
    assert reasons(busy, limits) and "other processes used" in reasons(busy, limits)[0]
    assert worker.pid not in [entry["pid"] for entry in quiet["top_foreign"]]


def test_decision_against_each_limit():
    summary = {"foreign_cpu_pct": 40.0, "steal_pct": 12.0, "memory_pressure": {"some_pct": 30.0},
               "top_foreign": [{"pid": 7, "name": "make", "cpu_pct": 38.0}]}  # fmt: skip
    assert reasons(summary, Limits()) == [
        "other processes used 40 % of a core (limit 25 %): make (pid 7) 38 %",
        "the hypervisor stole 12.0 % of the CPU time (limit 10 %)",
    ]  # memory pressure is recorded, not a flag, unless a limit is set
    assert reasons(summary, Limits(max_foreign_cpu_pct=50, max_steal_pct=None, max_memory_some_pct=20)) == [
        "tasks stalled on memory 30.0 % of the time (limit 20 %)"
    ]
    assert reasons({"foreign_cpu_pct": 25.0, "steal_pct": 10.0}, Limits()) == []  # at the limit is within it
    with pytest.raises(ServeprofError, match="max_steal_pct"):
        Limits(max_steal_pct=-1)


def test_proc_formats():
    stat = parse_proc_stat("cpu  100 20 30 400 50 6 4 8 0 0\ncpu0 50 10 15 200 25 3 2 4 0 0\n")
    ticks = (stat.busy, stat.irq, stat.idle, stat.steal)
    assert [value * CLOCK_TICKS for value in ticks] == pytest.approx([150, 10, 450, 8])
    assert parse_psi("some avg10=0.00 avg60=0.00 avg300=0.00 total=1500\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=700\n") == {
        "some": 1500.0, "full": 700.0}  # fmt: skip
    assert parse_vmstat("pgfault 10\npgmajfault 3\npswpin 2\n") == {"pgmajfault": 3.0, "pswpin": 2.0}


def test_without_psi_memory_pressure_falls_back_to_vmstat(tmp_path):
    (tmp_path / "vmstat").write_text("pgmajfault 100\npswpin 10\n")
    probe = MemoryProbe(tmp_path)
    assert probe.source == "vmstat"
    first = probe.read()
    (tmp_path / "vmstat").write_text("pgmajfault 300\npswpin 50\n")
    summary = MemoryProbe.summary(probe.source, first, probe.read(), 2.0, 512.0)
    assert summary == {
        "source": "vmstat",
        "mem_available_min_mb": 512.0,
        "major_faults_per_s": 100.0,
        "swap_ins_per_s": 20.0,
    }
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "memory").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert MemoryProbe(tmp_path).source == "psi"


def test_summary_needs_a_run():
    with pytest.raises(RuntimeError, match="has not run"):
        DisturbanceSampler(trees=[]).summary()
