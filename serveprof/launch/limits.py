"""A device's limits applied to one server, and what the server really ran under.

- **embedded, tfserving**: a cgroup of the server's own (serveprof/launch/cgroups.py),
  which the server joins before it executes, so TensorFlow sees its CPUs from the first
  instruction: a CPU quota of ``cpus`` and, for a whole number of CPUs, a cpuset of that
  many CPUs too (the threads stay on as many cores as the device has, instead of being
  spread thin over all of them and throttled in bursts); ``memory`` as the memory cap.
  Where no cgroup can be made (not root, no controller, no delegation), the server is
  pinned to ``ceil(cpus)`` CPUs by affinity and the record says that a fractional quota
  and the memory cap could not be enforced.
- **docker**: ``--cpus`` and ``--memory`` (with ``--memory-swap`` equal, so no swap);
  **apptainer**: its ``--cpus``/``--memory`` cgroup flags (serveprof/launch/commands.py).

Whatever the mechanism, once the model is AVAILABLE the limits are read back from the
server process's own cgroups and affinity (``seen``), so the record says what the
server ran under, not what was asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from serveprof.launch import cgroups
from serveprof.launch.device import DeviceSettings, memory_text

log = logging.getLogger("serveprof.launch")

CONTAINER_BACKENDS = ("docker", "apptainer")
REAPER_EXIT_WAIT_S = 10.0
# A limit read back may differ from the one written by rounding (memory to pages).
MEMORY_SLACK_BYTES = 1 << 20


def chosen_cpus(count: int, allowed: list[int] | None = None) -> list[int]:
    """The ``count`` highest-numbered CPUs this process may use: CPU 0, where the kernel's
    housekeeping and most interrupts land, is the last to be given to a server."""
    allowed = sorted(os.sched_getaffinity(0) if allowed is None else allowed)
    return allowed[-count:] if count < len(allowed) else allowed


def seen_limits(pid: int) -> dict:
    """The limits process ``pid`` runs under: its allowed CPUs, and the tightest CPU quota and
    memory cap of its cgroups, from its own cgroup up to the root (limits nest)."""
    seen: dict = {"cpus_allowed": None, "cpu_quota_cpus": None, "memory_limit_bytes": None}
    with contextlib.suppress(OSError):
        seen["cpus_allowed"] = cgroups.cpu_list_text(os.sched_getaffinity(pid))
    try:
        found = cgroups.hierarchies(own_cgroups=Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:
        return seen
    for controller, key, read in (
        ("cpu", "cpu_quota_cpus", cgroups.Cgroup.cpu_quota),
        ("memory", "memory_limit_bytes", cgroups.Cgroup.memory_limit),
    ):
        if controller not in found:
            continue
        hierarchy = found[controller]
        values = []
        directory = hierarchy.own
        while True:
            one = cgroups.Cgroup("seen", {controller: directory}, {controller: hierarchy.version})
            with contextlib.suppress(OSError, ValueError):
                value = read(one)
                if value is not None and (controller != "memory" or value < (1 << 60)):
                    values.append(value)
            if directory == hierarchy.root or directory.parent == directory:
                break
            directory = directory.parent
        seen[key] = min(values) if values else None
    return seen


class Confinement:
    """The limits of one server: ``prepare`` before it starts, ``verify`` once AVAILABLE, ``release`` after."""

    def __init__(self, device: DeviceSettings, backend: str):
        self.device, self.backend = device, backend
        self.group: cgroups.Cgroup | None = None
        self.affinity: list[int] | None = None
        self.cpuset: list[int] | None = None
        self.mechanism = "none"
        self.notes: list[str] = []
        self.seen: dict = {}
        self.final: dict = {}
        self._reaper: subprocess.Popen | None = None

    # ------------------------------------------------------------ before the server starts

    @classmethod
    def prepare(cls, device: DeviceSettings, backend: str) -> Confinement:
        confinement = cls(device, backend)
        if not device.constrained:
            return confinement
        available = sorted(os.sched_getaffinity(0))
        if device.cpus is not None and device.cpus > len(available):
            confinement.notes.append(
                f"{device.cpus:g} CPUs asked, but this machine lets the server use {len(available)}: "
                f"it ran on {len(available)}"
            )
        if backend in CONTAINER_BACKENDS:
            confinement.mechanism = f"{backend} --cpus/--memory"
            return confinement
        confinement._confine_with_cgroup(available)
        return confinement

    def _confine_with_cgroup(self, available: list[int]) -> None:
        device = self.device
        whole = device.cpus is not None and float(device.cpus).is_integer()
        controllers = set()
        if device.cpus is not None:
            controllers.add("cpu")
            if whole:
                controllers.add("cpuset")
        if device.memory is not None:
            controllers.add("memory")
        try:
            group = cgroups.create(controllers)
        except (cgroups.CgroupError, OSError) as error:
            self._fall_back(str(error), available)
            return
        try:
            if device.cpus is not None:
                group.set_cpu_quota(device.cpus)
                if whole:
                    self.cpuset = chosen_cpus(int(device.cpus), available)
                    group.set_cpuset(self.cpuset)
            if device.memory is not None:
                group.set_memory(device.memory_bytes)
        except OSError as error:
            group.remove(wait_s=0)
            self._fall_back(f"cannot set its limits ({error.strerror or error})", available)
            return
        self.group = group
        self.mechanism = f"cgroup {group.version_text()}"
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "serveprof.launch.reaper", *map(str, group.paths)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.info("server cgroup %s (%s): %s", group.name, self.mechanism, ", ".join(map(str, group.paths)))

    def _fall_back(self, reason: str, available: list[int]) -> None:
        device = self.device
        self.mechanism = "affinity"
        self.notes.append(f"no cgroup could be used ({reason})")
        if device.cpus is not None:
            self.affinity = chosen_cpus(device.whole_cpus, available)
            if not float(device.cpus).is_integer():
                self.notes.append(
                    f"the CPU quota of {device.cpus:g} CPUs could not be enforced: the server ran on "
                    f"{len(self.affinity)} whole CPU(s) by affinity"
                )
        if device.memory is not None:
            self.notes.append(f"memory is not capped: the {device.memory} limit could not be enforced without a cgroup")

    def preexec(self) -> Callable[[], None] | None:
        """What the server's process does between fork and exec: join the group, or pin itself."""
        if self.group is not None:
            files = self.group.procs_files()

            def join() -> None:
                pid = str(os.getpid()).encode()
                for name in files:
                    descriptor = os.open(name, os.O_WRONLY)
                    try:
                        os.write(descriptor, pid)
                    finally:
                        os.close(descriptor)

            return join
        if self.affinity is not None:
            cpus = set(self.affinity)
            return lambda: os.sched_setaffinity(0, cpus)
        return None

    # ------------------------------------------------------------ while it runs

    def verify(self, pid: int | None) -> None:
        """Read back what the server process runs under (its cgroups and affinity)."""
        if not self.device.constrained:
            return
        if pid is None:
            self.notes.append("the limits could not be read back: the server's process is not visible from here")
            return
        self.seen = seen_limits(pid)

    def oom_killed(self) -> bool | None:
        """Whether the memory cap's OOM killer struck (None: unknown with this mechanism)."""
        if self.group is not None and self.device.memory is not None:
            with contextlib.suppress(OSError):
                return self.group.oom_kills() > 0
        return None

    def memory_peak(self) -> int | None:
        if self.group is None:
            return None
        with contextlib.suppress(OSError, ValueError):
            return self.group.memory_peak()
        return None

    def snapshot(self) -> None:
        """Counters worth keeping once the measurement is done: the memory peak, CPU throttling."""
        if self.group is None:
            return
        self.final["memory_peak_bytes"] = self.memory_peak()
        with contextlib.suppress(OSError, ValueError):
            self.final["throttling"] = self.group.throttling()

    # ------------------------------------------------------------ the record

    def enforced(self, oom_killed: bool = False) -> tuple[bool | None, bool | None]:
        """(CPU limit enforced, memory cap enforced), judged on what was read back; None where none was asked
        or nothing could be read back (a server that died loading). A kill by the memory cap proves the cap."""
        device, seen = self.device, self.seen
        cpu = memory = None
        if not seen:
            return None, True if oom_killed else None
        if device.cpus is not None:
            quota = seen.get("cpu_quota_cpus")
            allowed = cgroups._split_list(seen["cpus_allowed"]) if seen.get("cpus_allowed") else []
            by_quota = quota is not None and quota <= device.cpus + 1e-6
            by_affinity = bool(allowed) and len(allowed) <= device.cpus + 1e-6
            cpu = by_quota or by_affinity
        if device.memory is not None:
            limit = seen.get("memory_limit_bytes")
            memory = limit is not None and limit <= device.memory_bytes + MEMORY_SLACK_BYTES
        return cpu, memory

    def record(self, oom_killed: bool = False) -> dict | None:
        """The ``limits`` block of the stats JSON; None for an unconstrained device."""
        device = self.device
        if not device.constrained:
            return None
        cpu, memory = self.enforced(oom_killed)
        notes = list(self.notes)
        if not self.seen:
            notes.append("the limits were not read back: the server stopped before its model was AVAILABLE")
        if cpu is False:
            notes.append(f"the CPU limit of {device.cpus:g} could not be verified on the server process")
        if memory is False and not any("memory is not capped" in note for note in notes):
            notes.append(f"memory is not capped: no cap of {device.memory} was found on the server process")
        return {
            "device": device.name,
            "cpus": device.cpus,
            "memory": device.memory,
            "memory_bytes": device.memory_bytes,
            "intra_op_threads": device.intra_op_threads,
            "inter_op_threads": device.inter_op_threads,
            "mechanism": self.mechanism,
            "cpuset": cgroups.cpu_list_text(self.cpuset) if self.cpuset else None,
            "cpu_enforced": cpu,
            "memory_enforced": memory,
            "seen": dict(self.seen),
            **self.final,
            "notes": notes,
        }

    def describe_cap(self) -> str:
        return memory_text(self.device.memory_bytes) if self.device.memory else "no cap"

    # ------------------------------------------------------------ after the server stopped

    def release(self) -> None:
        """Remove the group (the server has stopped) and let the reaper go."""
        group, self.group = self.group, None
        try:
            if group is not None:
                left = group.remove()
                if left:
                    log.warning("could not remove cgroup(s) %s; the reaper will retry", ", ".join(map(str, left)))
        finally:
            reaper, self._reaper = self._reaper, None
            if reaper is not None:
                with contextlib.suppress(OSError):
                    reaper.stdin.close()
                try:
                    reaper.wait(timeout=REAPER_EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    reaper.kill()
                    reaper.wait()
