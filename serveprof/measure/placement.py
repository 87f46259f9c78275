"""Client and server on separate cores (``measure.client_cpus``), for the span of one series.

The client's threads (this process) are pinned to ``client_cpus`` and every thread of
the server's process tree to the CPUs it may use less those, so the two never take
turns on one core. Affinity is per thread on Linux, so each task under
``/proc/<pid>/task`` is set (as ``taskset -a`` does); threads started later inherit it
from the thread that starts them. On leaving, the client gets its own CPUs back; the
server is torn down anyway.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import psutil

from serveprof.errors import ServeprofError

PROC = Path("/proc")


def tasks(pid: int) -> list[int]:
    """The thread ids of process ``pid`` (none if it has gone)."""
    try:
        return [int(name) for name in os.listdir(PROC / str(pid) / "task")]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a container runtime's server is a grandchild)."""
    try:
        parent = psutil.Process(pid)
        return [pid, *(child.pid for child in parent.children(recursive=True))]
    except psutil.NoSuchProcess:
        return []


def pin(pids: Iterable[int], cpus: set[int]) -> None:
    """Every thread of every process in ``pids`` onto ``cpus``; threads that exit meanwhile are skipped."""
    for pid in pids:
        for task in tasks(pid):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(task, cpus)


@contextlib.contextmanager
def pinned(client_cpus: Iterable[int] | None, server_pid: int | None) -> Iterator[dict | None]:
    """Client on ``client_cpus``, server on the rest, inside the block; yields what the stats record.

    ``None`` for ``client_cpus`` leaves placement to the kernel (and yields None).
    """
    if client_cpus is None:
        yield None
        return
    wanted = set(client_cpus)
    own = os.sched_getaffinity(0)
    if not wanted <= own:
        raise ServeprofError(
            f"measure.client_cpus {sorted(wanted)} are not all CPUs this process may use ({sorted(own)})",
            f"pick client CPUs among {sorted(own)}, or set measure.client_cpus to null",
        )
    server_cpus: set[int] | None = None
    if server_pid is not None:
        try:
            server_cpus = os.sched_getaffinity(server_pid) - wanted
        except OSError:
            server_cpus = None
        if server_cpus is not None and not server_cpus:
            raise ServeprofError(
                f"measure.client_cpus {sorted(wanted)} leave the server no CPU of its own "
                f"(it may use {sorted(os.sched_getaffinity(server_pid))})",
                "leave at least one CPU to the server: give the client fewer CPUs, or set measure.client_cpus to null",
            )
    if server_cpus:
        pin(tree(server_pid), server_cpus)
    pin([os.getpid()], wanted)
    try:
        yield {
            "client_cpus": sorted(wanted),
            "server_cpus": sorted(server_cpus) if server_cpus else None,
            "note": None if server_cpus else "the server's process is not visible from here: only the client is pinned",
        }
    finally:
        pin([os.getpid()], own)
