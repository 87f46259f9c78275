"""Control groups for one server: create, set CPU and memory limits, read them back, remove.

Both cgroup versions are supported, controller by controller (a hybrid machine has some
on v1 and the rest on v2):

- **v1**: one hierarchy per controller (``/sys/fs/cgroup/cpu``, ``cpuset``, ``memory``).
  CPU quota ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, pinning ``cpuset.cpus`` (with
  ``cpuset.mems`` copied from the parent, which v1 requires), memory
  ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes`` where swap is accounted,
  so the cap is not eased by swapping). OOM kills: ``oom_kill`` in ``memory.oom_control``;
  peak: ``memory.max_usage_in_bytes``.
- **v2**: one directory; ``cpu.max``, ``cpuset.cpus``/``cpuset.mems``, ``memory.max`` and
  ``memory.swap.max = 0``; OOM kills: ``oom_kill`` in ``memory.events``; peak: ``memory.peak``.

A group is created *inside the launcher's own cgroup* (a SLURM job's, a systemd
service's), so its limits nest under whatever the launcher was given and never escape
it. In v2 the parent must delegate the controllers (its ``cgroup.subtree_control``); a
cgroup that holds processes cannot (the "no internal processes" rule), so when the
launcher's own cgroup does not already delegate them, the root is tried, which may.

Names are ``serveprof-<launcher pid>-<random>``: a group whose launcher is gone and
which holds no process is left over from a killed run and is removed by the next
(``sweep``); the reaper (serveprof/launch/reaper.py) normally removes it first.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

CONTROLLERS = ("cpu", "cpuset", "memory")
PERIOD_US = 100_000  # the kernel's default CFS period: a quota of 150000 µs is 1.5 CPUs
PREFIX = "serveprof-"
NAME = re.compile(r"serveprof-(\d+)-[0-9a-f]{12}")
REMOVE_WAIT_S = 5.0


class CgroupError(OSError):
    """A group could not be created or set up here (no permission, controller missing)."""


@dataclass(frozen=True)
class Hierarchy:
    """Where one controller lives for this process: its version, and the process's own cgroup in it."""

    controller: str
    version: int
    own: Path  # the launcher's cgroup directory (v1: in this controller's hierarchy)
    root: Path  # the hierarchy's mount point


def _split_list(text: str) -> list[int]:
    """A kernel CPU list ("0-3,6") as numbers."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


def cpu_list_text(cpus: Iterable[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def _relative(path: str, mount_root: str) -> str | None:
    """``path`` (from /proc/self/cgroup) below the mount's root, or None when it lies outside."""
    if mount_root == "/":
        return path.lstrip("/")
    if path == mount_root or path.startswith(mount_root.rstrip("/") + "/"):
        return path[len(mount_root) :].lstrip("/")
    return None


def hierarchies(
    mountinfo: str | None = None, own_cgroups: str | None = None, controllers: Iterable[str] = CONTROLLERS
) -> dict[str, Hierarchy]:
    """Where each of ``controllers`` can be used from this process; absent ones are left out.

    ``mountinfo`` and ``own_cgroups`` default to /proc/self/mountinfo and /proc/self/cgroup.
    """
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    if own_cgroups is None:
        own_cgroups = Path("/proc/self/cgroup").read_text()
    v1_paths: dict[str, str] = {}
    v2_path = None
    for line in own_cgroups.splitlines():
        number, names, path = line.split(":", 2)
        if number == "0" and names == "":
            v2_path = path
        for name in names.split(","):
            v1_paths[name] = path
    found: dict[str, Hierarchy] = {}
    v2_mount = None
    for line in mountinfo.splitlines():
        fields = line.split()
        separator = fields.index("-")
        mount_root, mount_point = fields[3], fields[4]
        kind, options = fields[separator + 1], fields[separator + 3].split(",")
        if kind == "cgroup2":
            v2_mount = (mount_root, mount_point)
        elif kind == "cgroup":
            for controller in controllers:
                if controller in options and controller in v1_paths and controller not in found:
                    relative = _relative(v1_paths[controller], mount_root)
                    if relative is not None:
                        found[controller] = Hierarchy(controller, 1, Path(mount_point) / relative, Path(mount_point))
    if v2_mount is not None and v2_path is not None:
        relative = _relative(v2_path, v2_mount[0])
        if relative is not None:
            root = Path(v2_mount[1])
            own = root / relative
            available = set(_read(root / "cgroup.controllers", "").split())
            for controller in controllers:
                if controller not in found and controller in available:
                    found[controller] = Hierarchy(controller, 2, own, root)
    return found


def _read(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        if default is None:
            raise
        return default


def _write(path: Path, value: str) -> None:
    # One write() per value: cgroup files take a value per write call.
    descriptor = os.open(path, os.O_WRONLY)
    try:
        os.write(descriptor, value.encode())
    finally:
        os.close(descriptor)


def _counter(text: str, key: str) -> int | None:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    return None


def _v2_parent(hierarchy: Hierarchy, controllers: set[str]) -> Path:
    """A v2 cgroup whose children get ``controllers``: the own one if it delegates them, else the root."""
    wanted = {f"+{controller}" for controller in controllers}
    for candidate in dict.fromkeys([hierarchy.own, hierarchy.root]):
        delegated = set(_read(candidate / "cgroup.subtree_control", "").split())
        if controllers <= delegated:
            return candidate
        try:
            _write(candidate / "cgroup.subtree_control", " ".join(sorted(wanted)))
            return candidate
        except OSError:
            continue  # busy (processes in it), or not ours to change
    raise CgroupError(
        f"no cgroup v2 here delegates {', '.join(sorted(controllers))} (own cgroup {hierarchy.own}, root {hierarchy.root})"
    )


@dataclass
class Cgroup:
    """One server's group: a directory per v1 controller, or one v2 directory."""

    name: str
    directories: dict[str, Path] = field(default_factory=dict)  # controller -> its directory
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def paths(self) -> list[Path]:
        return list(dict.fromkeys(self.directories.values()))

    def procs_files(self) -> list[str]:
        """The files a process writes its pid to, to join every part of the group."""
        return [str(path / "cgroup.procs") for path in self.paths]

    def version_text(self) -> str:
        return " + ".join(f"v{version}" for version in sorted(set(self.versions.values())))

    # ------------------------------------------------------------ limits

    def set_cpu_quota(self, cpus: float) -> None:
        directory = self.directories["cpu"]
        quota = max(1000, round(cpus * PERIOD_US))  # the kernel's smallest quota is 1 ms
        if self.versions["cpu"] == 1:
            _write(directory / "cpu.cfs_period_us", str(PERIOD_US))
            _write(directory / "cpu.cfs_quota_us", str(quota))
        else:
            _write(directory / "cpu.max", f"{quota} {PERIOD_US}")

    def set_cpuset(self, cpus: Iterable[int]) -> None:
        directory = self.directories["cpuset"]
        parent = directory.parent
        mems_file = "cpuset.mems" if self.versions["cpuset"] == 1 else "cpuset.mems.effective"
        mems = _read(parent / mems_file, "") or _read(parent / "cpuset.effective_mems", "") or "0"
        _write(directory / "cpuset.mems", mems)
        _write(directory / "cpuset.cpus", cpu_list_text(cpus))

    def set_memory(self, limit: int) -> None:
        directory = self.directories["memory"]
        if self.versions["memory"] == 1:
            _write(directory / "memory.limit_in_bytes", str(limit))
            with contextlib.suppress(OSError):  # present only where swap is accounted
                _write(directory / "memory.memsw.limit_in_bytes", str(limit))
        else:
            _write(directory / "memory.max", str(limit))
            with contextlib.suppress(OSError):
                _write(directory / "memory.swap.max", "0")

    # ------------------------------------------------------------ reading back

    def cpu_quota(self) -> float | None:
        """The CPU quota in CPUs, as the kernel holds it (None: no quota)."""
        if "cpu" not in self.directories:
            return None
        directory = self.directories["cpu"]
        if self.versions["cpu"] == 1:
            quota = int(_read(directory / "cpu.cfs_quota_us"))
            period = int(_read(directory / "cpu.cfs_period_us"))
        else:
            quota_text, period_text = _read(directory / "cpu.max").split()
            if quota_text == "max":
                return None
            quota, period = int(quota_text), int(period_text)
        return None if quota < 0 else quota / period

    def cpuset(self) -> list[int] | None:
        if "cpuset" not in self.directories:
            return None
        directory = self.directories["cpuset"]
        name = "cpuset.effective_cpus" if self.versions["cpuset"] == 1 else "cpuset.cpus.effective"
        return _split_list(_read(directory / name, "") or _read(directory / "cpuset.cpus"))

    def memory_limit(self) -> int | None:
        if "memory" not in self.directories:
            return None
        directory = self.directories["memory"]
        name = "memory.limit_in_bytes" if self.versions["memory"] == 1 else "memory.max"
        text = _read(directory / name)
        return None if text == "max" else int(text)

    def memory_peak(self) -> int | None:
        if "memory" not in self.directories:
            return None
        directory = self.directories["memory"]
        name = "memory.max_usage_in_bytes" if self.versions["memory"] == 1 else "memory.peak"
        text = _read(directory / name, "")
        return int(text) if text.isdigit() else None

    def oom_kills(self) -> int:
        """How many processes the memory cap's OOM killer has killed in this group."""
        if "memory" not in self.directories:
            return 0
        directory = self.directories["memory"]
        name = "memory.oom_control" if self.versions["memory"] == 1 else "memory.events"
        return _counter(_read(directory / name, ""), "oom_kill") or 0

    def throttling(self) -> dict | None:
        """How often the CPU quota held the server back: periods, throttled periods, throttled seconds."""
        if "cpu" not in self.directories:
            return None
        text = _read(self.directories["cpu"] / "cpu.stat", "")
        periods, throttled = _counter(text, "nr_periods"), _counter(text, "nr_throttled")
        if periods is None:
            return None
        if self.versions["cpu"] == 1:
            seconds = (_counter(text, "throttled_time") or 0) / 1e9
        else:
            seconds = (_counter(text, "throttled_usec") or 0) / 1e6
        return {"periods": periods, "throttled_periods": throttled, "throttled_s": seconds}

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.paths:
            with contextlib.suppress(OSError):
                found.update(int(line) for line in _read(path / "cgroup.procs").split())
        return found

    # ------------------------------------------------------------ removal

    def remove(self, wait_s: float = REMOVE_WAIT_S) -> list[Path]:
        """Kill what is left in the group and remove its directories; returns those that remain."""
        return remove_directories(self.paths, wait_s)


def remove_directories(paths: Iterable[Path], wait_s: float = REMOVE_WAIT_S) -> list[Path]:
    """``rmdir`` each group, killing any process still in it; a group being emptied is retried until ``wait_s``."""
    remaining = list(paths)
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for path in remaining:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                continue
            except OSError:  # EBUSY: a process is still in it (exiting, or a server that outlived us)
                with contextlib.suppress(OSError):
                    for pid in _read(path / "cgroup.procs").split():
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(int(pid), signal.SIGKILL)
                left.append(path)
        if not left or time.monotonic() >= deadline:
            return left
        remaining = left
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep(parents: Iterable[Path]) -> list[Path]:
    """Remove groups left by launchers that are gone (killed before their reaper could act)."""
    removed = []
    for parent in dict.fromkeys(parents):
        with contextlib.suppress(OSError):
            for child in parent.iterdir():
                found = NAME.fullmatch(child.name)
                if found and child.is_dir() and not _alive(int(found.group(1))):
                    with contextlib.suppress(OSError):
                        if not _read(child / "cgroup.procs", "x").split():
                            os.rmdir(child)
                            removed.append(child)
    return removed


def create(controllers: Iterable[str], found: dict[str, Hierarchy] | None = None, name: str | None = None) -> Cgroup:
    """A new, empty group with ``controllers`` (a subset of cpu, cpuset, memory); CgroupError if impossible.

    Nothing is left behind when it fails half-way.
    """
    wanted = set(controllers)
    found = hierarchies(controllers=wanted) if found is None else found
    missing = wanted - set(found)
    if missing:
        raise CgroupError(f"the {', '.join(sorted(missing))} controller(s) are not mounted for this process")
    name = name or f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    group = Cgroup(name)
    v2 = {controller for controller in wanted if found[controller].version == 2}
    parents: dict[str, Path] = {}
    for controller in sorted(wanted):
        hierarchy = found[controller]
        parents[controller] = (
            hierarchy.own if hierarchy.version == 1 else _v2_parent(hierarchy, v2)  # one v2 parent for all
        )
    sweep(parents.values())
    try:
        for controller in sorted(wanted):
            directory = parents[controller] / name
            if directory not in group.paths:
                directory.mkdir()
            group.directories[controller] = directory
            group.versions[controller] = found[controller].version
    except OSError as error:
        remove_directories(group.paths, wait_s=0)
        raise CgroupError(f"cannot create cgroup {name} ({error.strerror or error})") from None
    return group
