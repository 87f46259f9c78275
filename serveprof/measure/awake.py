"""Keep every CPU awake during a series (``measure.keep_awake``): one SCHED_IDLE spinner per CPU.

On a VM an idle vCPU halts (HLT), and waking it for the next request's reply costs a VM
exit, often more than a small model's whole inference; a spinner pinned to each CPU
means no CPU halts, yet runs only when nothing else wants that CPU (SCHED_IDLE), so the
client and server are never made to wait for it. On bare metal the same end is reached
by writing 0 to ``/dev/cpu_dma_latency`` (deep C-states forbidden while the file is
held open, as cyclictest does), so that is done too where it can be.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from serveprof.launch.process import spawn, stop

CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")
# The spinners' command line, which also names them in `ps` and lets a test find any left behind.
SPIN = "while True: pass"
MARK = "serveprof-keep-awake"
STOP_GRACE_S = 2.0


def spinner_command(cpu: int) -> list[str]:
    return [sys.executable, "-c", SPIN, MARK, str(cpu)]


def _confine(cpu: int):
    def confine() -> None:  # in the child, before it runs a single instruction of the loop
        os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    return confine


@contextlib.contextmanager
def _dma_latency_zero(path: Path = CPU_DMA_LATENCY) -> Iterator[bool]:
    """Holds ``path`` open with 0 written to it (the kernel honours it only while open); yields whether it could."""
    try:
        handle = open(path, "wb", buffering=0)  # noqa: SIM115 - held for the span, closed below
    except OSError:
        yield False
        return
    try:
        try:
            handle.write(struct.pack("i", 0))
            held = True
        except OSError:
            held = False
        yield held
    finally:
        handle.close()


@contextlib.contextmanager
def kept_awake(cpus: Iterable[int] | None = None) -> Iterator[dict]:
    """One spinner per CPU of ``cpus`` inside the block; yields ``{"cpus", "cpu_dma_latency", "pids"}``.

    ``cpus`` defaults to the CPUs this process may use: the caller takes them before it
    pins the client (placement.py), and every server serveprof launches is confined
    within them (serveprof/launch/limits.py), so they are all the CPUs the series runs on.
    The spinners die with this process (PR_SET_PDEATHSIG, serveprof/launch/process.py)
    and are stopped on leaving, whether the block ends, raises, or SIGTERM ends it.
    """
    chosen = sorted(os.sched_getaffinity(0) if cpus is None else set(cpus))
    spinners: list[subprocess.Popen] = []
    try:
        with _dma_latency_zero() as held:
            for cpu in chosen:
                spinners.append(spawn(spinner_command(cpu), subprocess.DEVNULL, signal.SIGKILL, confine=_confine(cpu)))
            yield {"cpus": chosen, "cpu_dma_latency": held, "pids": [spinner.pid for spinner in spinners]}
    finally:
        for spinner in spinners:
            stop(spinner, grace_s=STOP_GRACE_S)


@contextlib.contextmanager
def awake_if(enabled: bool) -> Iterator[dict | None]:
    """``kept_awake()`` when ``enabled``, else nothing (yields None)."""
    if not enabled:
        yield None
        return
    with kept_awake() as record:
        yield record


def recorded(record: dict | None) -> dict | None:
    """What the stats JSON keeps of a ``kept_awake`` record: the CPUs and the latency hold, not the pids."""
    return None if record is None else {"cpus": record["cpus"], "cpu_dma_latency": record["cpu_dma_latency"]}
