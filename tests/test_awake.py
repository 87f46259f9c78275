"""``measure.keep_awake``: one SCHED_IDLE spinner pinned to each CPU, and none left behind, however the
span ends (normally, by an exception, by SIGTERM, or by the parent's SIGKILL); a real ``serveprof
measure --keep-awake`` records it and does not count the spinners' CPU as foreign."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from serveprof.measure.awake import MARK, kept_awake
from serveprof.measure.provenance import keep_awake_of
from tests.test_measure_cli import MODEL, launch_args, serveprof

GONE_WITHIN_S = 10

# Spinners started in a child that prints their pids, then sleeps until signalled.
CHILD = """
import time
from serveprof.launch import terminate_on_sigterm
from serveprof.measure.awake import kept_awake
with terminate_on_sigterm(), kept_awake() as record:
    print(*record["pids"], flush=True)
    time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def all_gone(processes: list[psutil.Process]) -> bool:
    """Whether every process ended (waiting up to GONE_WITHIN_S); psutil checks identity, so a reused pid is not counted."""
    _, left = psutil.wait_procs(processes, timeout=GONE_WITHIN_S)
    return not [process for process in left if alive(process.pid)]


def spinners_left() -> list[psutil.Process]:
    return [process for process in psutil.process_iter(["cmdline"]) if MARK in (process.info["cmdline"] or [])]


def test_one_idle_spinner_pinned_to_each_cpu_while_inside_and_none_after():
    cpus = sorted(os.sched_getaffinity(0))
    with kept_awake() as record:
        assert record["cpus"] == cpus and len(record["pids"]) == len(cpus)
        processes = [psutil.Process(pid) for pid in record["pids"]]
        for cpu, pid in zip(cpus, record["pids"], strict=True):
            assert os.sched_getscheduler(pid) == os.SCHED_IDLE
            assert os.sched_getaffinity(pid) == {cpu}
            assert alive(pid)
        # Where the kernel offers /dev/cpu_dma_latency to us (root), it is held.
        assert record["cpu_dma_latency"] is os.access("/dev/cpu_dma_latency", os.W_OK)
    assert all_gone(processes)


def test_the_spinners_stop_when_the_body_raises():
    with pytest.raises(RuntimeError, match="the body failed"):
        with kept_awake([min(os.sched_getaffinity(0))]) as record:
            processes = [psutil.Process(pid) for pid in record["pids"]]
            raise RuntimeError("the body failed")
    assert len(processes) == 1 and all_gone(processes)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_the_spinners_end_with_their_parent(signum):
    """SIGTERM: the span is left through SystemExit and stops them; SIGKILL: the kernel kills them (PDEATHSIG)."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in child.stdout.readline().split()]
        assert len(pids) == len(os.sched_getaffinity(0))
        processes = [psutil.Process(pid) for pid in pids]
        child.send_signal(signum)
        assert child.wait(timeout=30) == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
        assert all_gone(processes)
    finally:
        child.kill()
        child.wait(timeout=30)


def test_measure_keep_awake_records_it_counts_the_spinners_as_ours_and_leaves_none(tiny_classifier_base, tmp_path):
    out = tmp_path / "profiling" / MODEL
    done = serveprof(
        "measure",
        *launch_args(tiny_classifier_base),
        "--batch-size",
        "1",
        "--requests",
        "300",
        "--max-seconds",
        "2",
        "--warmup-requests",
        "5",
        "--keep-awake",
        "--out-dir",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert not spinners_left()
    stats = json.loads((out / "stats" / "b1.json").read_text())
    cpus = sorted(os.sched_getaffinity(0))
    assert stats["keep_awake"] == {"cpus": cpus, "cpu_dma_latency": os.access("/dev/cpu_dma_latency", os.W_OK)}
    disturbance = stats["disturbance"]
    # The spinners fill every CPU the client and server leave idle: counted as foreign, that is
    # most of a core on any machine, and the series would be flagged.
    assert disturbance["flagged"] is False, disturbance["reasons"]
    assert disturbance["own_cpu_pct"] > 100 * len(cpus) - 60, disturbance


def test_provenance_says_whether_the_cpus_were_kept_awake():
    """None when no series was (so a run from before the key reads the same), else each distinct setting."""
    on = {"keep_awake": {"cpus": [0, 1], "cpu_dma_latency": True}}
    assert keep_awake_of([{}, {"keep_awake": None}]) is None
    assert keep_awake_of([on, on]) == "on (CPUs 0,1; cpu_dma_latency 0)"
    assert keep_awake_of([on, {"keep_awake": {"cpus": [1], "cpu_dma_latency": False}}, {}]) == (
        "on (CPUs 0,1; cpu_dma_latency 0); on (CPUs 1); off"
    )
