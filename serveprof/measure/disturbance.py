"""Was the machine quiet while a series was timed? Foreign CPU, steal and memory pressure.

A background thread reads the whole machine every ``interval_s`` during the timed
requests, beside ``ResourceSampler``:

- ``foreign_cpu_pct``: CPU time that processes other than our own trees (the server's
  and the client's, given as root pids) used, in percent of one core (as ``top``: 100
  is one core busy). It is the machine's user+nice+system time from ``/proc/stat``
  less our trees' own CPU time, so processes that start and exit between two samples
  still count. Interrupt time is kept apart (``irq_pct``): the loopback traffic of our
  own requests is accounted there, not to our processes.
- ``steal_pct``: time the hypervisor gave this VM's CPUs to someone else, in percent of
  the machine's CPU time (all cores) over the series.
- memory pressure: the share of wall time some (``some_pct``) or all (``full_pct``)
  tasks stalled on memory, from PSI (``/proc/pressure/memory``). Kernels without PSI
  get major page faults and swap-ins per second from ``/proc/vmstat`` instead.

``summary()`` returns the dict stored as ``disturbance`` in the stats JSON; it says
whether the series is flagged and why (``flagged``, ``reasons``), against the limits
given. Memory pressure is recorded, and flags only when ``max_memory_some_pct`` is set:
a model close to its own memory cap stalls on memory without anyone disturbing it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from serveprof.errors import ServeprofError

# Defaults, chosen from the idle and disturbed series in docs/measurement.md
# ("Disturbance"): a quiet series here shows single-digit foreign CPU and steal.
MAX_FOREIGN_CPU_PCT = 25.0
MAX_STEAL_PCT = 10.0
INTERVAL_S = 0.5
TOP_FOREIGN = 3  # processes named in the reasons and the summary

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """When a series counts as disturbed; None switches a check off."""

    max_foreign_cpu_pct: float | None = MAX_FOREIGN_CPU_PCT
    max_steal_pct: float | None = MAX_STEAL_PCT
    max_memory_some_pct: float | None = None

    def __post_init__(self):
        for name, value in asdict(self).items():
            if value is not None and not value >= 0:
                raise ServeprofError(
                    f"{name} is {value!r}", f"set {name} to a percentage of 0 or more, or null to switch the check off"
                )


@dataclass(frozen=True)
class CpuTimes:
    """Machine-wide CPU seconds from ``/proc/stat``'s first line (all cores summed)."""

    busy: float  # user + nice + system (user and nice include guest time)
    irq: float  # irq + softirq
    idle: float  # idle + iowait
    steal: float

    @property
    def total(self) -> float:
        return self.busy + self.irq + self.idle + self.steal

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.busy - other.busy, self.irq - other.irq, self.idle - other.idle, self.steal - other.steal)


def parse_proc_stat(text: str) -> CpuTimes:
    """The aggregate ``cpu`` line: user nice system idle iowait irq softirq steal ..."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            ticks = [int(value) for value in fields[1:9]] + [0] * max(0, 9 - len(fields))
            user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
            return CpuTimes(
                busy=(user + nice + system) / CLOCK_TICKS,
                irq=(irq + softirq) / CLOCK_TICKS,
                idle=(idle + iowait) / CLOCK_TICKS,
                steal=steal / CLOCK_TICKS,
            )
    raise ValueError("no aggregate 'cpu' line")


def read_cpu_times(proc: Path = PROC) -> CpuTimes:
    return parse_proc_stat((proc / "stat").read_text())


def parse_psi(text: str) -> dict[str, float]:
    """``{"some": total µs, "full": total µs}`` from a ``/proc/pressure/*`` file."""
    totals = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        values = dict(field.split("=", 1) for field in fields[1:] if "=" in field)
        if "total" in values:
            totals[fields[0]] = float(values["total"])
    return totals


def parse_vmstat(text: str, keys: Iterable[str] = ("pgmajfault", "pswpin")) -> dict[str, float]:
    wanted = set(keys)
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in wanted:
            values[name] = float(value)
    return values


def mem_available_mb(proc: Path = PROC) -> float | None:
    try:
        for line in (proc / "meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


class MemoryProbe:
    """PSI where the kernel has it, else /proc/vmstat counters (documented fallback)."""

    def __init__(self, proc: Path = PROC):
        self.proc = proc
        self.source = "psi" if self._psi() is not None else "vmstat" if self._vmstat() is not None else None

    def _psi(self) -> dict[str, float] | None:
        try:
            totals = parse_psi((self.proc / "pressure" / "memory").read_text())
        except OSError:  # absent, or present but disabled (psi=0 gives EOPNOTSUPP)
            return None
        return totals if "some" in totals else None

    def _vmstat(self) -> dict[str, float] | None:
        try:
            values = parse_vmstat((self.proc / "vmstat").read_text())
        except OSError:
            return None
        return values or None

    def read(self) -> dict[str, float] | None:
        if self.source == "psi":
            return self._psi()
        if self.source == "vmstat":
            return self._vmstat()
        return None

    @staticmethod
    def summary(
        source: str | None, first: dict | None, last: dict | None, wall_s: float, available_min_mb: float | None
    ) -> dict:
        result: dict = {"source": source, "mem_available_min_mb": available_min_mb}
        if not first or not last or wall_s <= 0:
            return result
        if source == "psi":  # totals in µs of stall
            result["some_pct"] = 100.0 * (last["some"] - first["some"]) / 1e6 / wall_s
            if "full" in first and "full" in last:
                result["full_pct"] = 100.0 * (last["full"] - first["full"]) / 1e6 / wall_s
        elif source == "vmstat":
            result["major_faults_per_s"] = (last.get("pgmajfault", 0) - first.get("pgmajfault", 0)) / wall_s
            result["swap_ins_per_s"] = (last.get("pswpin", 0) - first.get("pswpin", 0)) / wall_s
        return result


def _own_cpu(trees: Iterable[int], processes: Iterable[int]) -> dict[int, float]:
    """CPU seconds (user + system, all threads) of each live process in the trees under
    ``trees``, and of each of ``processes`` alone (without its children)."""
    seconds: dict[int, float] = {}
    for root, follow in [*((pid, True) for pid in trees), *((pid, False) for pid in processes)]:
        try:
            parent = psutil.Process(root)
            members = [parent, *parent.children(recursive=True)] if follow else [parent]
        except psutil.NoSuchProcess:
            continue
        for process in members:
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            seconds[process.pid] = times.user + times.system
    return seconds


def _all_cpu() -> dict[int, tuple[str, float]]:
    """Every process's name and CPU seconds: read twice (start, end) to name who used the machine."""
    snapshot = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info.get("cpu_times")
        if times is not None:
            snapshot[process.pid] = (process.info.get("name") or "?", times.user + times.system)
    return snapshot


class DisturbanceSampler:
    """``with DisturbanceSampler(trees=[server.pid]) as sampler: ...``, then ``sampler.summary()``.

    Our own CPU is that of the process trees under ``trees`` (the server: its children
    are followed as they appear) and of ``processes`` alone (the client, by default
    this process; its children are not ours by default, since a test or a script may
    start anything). A callable for ``trees`` is asked again at every sample, for a
    server that is restarted. ``start()``/``stop()`` do the same as entering and leaving.
    """

    def __init__(
        self,
        trees: Iterable[int | None] | Callable[[], Iterable[int | None]] = (),
        processes: Iterable[int] | None = None,
        interval_s: float = INTERVAL_S,
        limits: Limits | None = None,
        proc: Path = PROC,
        name_processes: bool = True,
    ):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self._trees = trees if callable(trees) else (lambda fixed=tuple(trees): fixed)
        self._processes = tuple(processes) if processes is not None else (os.getpid(),)
        self.interval_s = interval_s
        self.limits = limits or Limits()
        self.proc = proc
        self.name_processes = name_processes
        self._memory = MemoryProbe(proc)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._baseline: dict[int, float] = {}  # pid -> CPU seconds at start(); a process seen later starts from 0
        self._latest: dict[int, float] = {}
        self._first_cpu = self._last_cpu = self._window_cpu = None
        self._first_memory = self._last_memory = None
        self._window_own = 0.0
        self._peak_foreign = None
        self._available_min: float | None = None
        self._started = self._last = self._window_started = 0.0
        self._samples = 0
        self._processes_before: dict[int, tuple[str, float]] = {}
        self._processes_after: dict[int, tuple[str, float]] = {}

    def _roots(self) -> list[int]:
        return [pid for pid in self._trees() if pid is not None]

    def _own_seconds(self) -> float:
        return sum(seconds - self._baseline.get(pid, 0.0) for pid, seconds in self._latest.items())

    def _take_sample(self, first: bool = False) -> None:
        own = _own_cpu(self._roots(), self._processes)
        cpu = read_cpu_times(self.proc)
        memory = self._memory.read()
        available = mem_available_mb(self.proc)
        now = time.monotonic()
        with self._lock:
            if first:
                self._baseline = dict(own)
                self._first_cpu = self._window_cpu = cpu
                self._first_memory = memory
                self._started = self._window_started = now
            # A process born after the start counts from zero; one that exited keeps its last reading.
            self._latest.update(own)
            self._last_cpu, self._last_memory, self._last = cpu, memory, now
            if available is not None:
                self._available_min = available if self._available_min is None else min(self._available_min, available)
            if not first:
                self._samples += 1
                own_total = self._own_seconds()
                wall = now - self._window_started
                if wall >= self.interval_s * 0.5:
                    foreign = (cpu - self._window_cpu).busy - (own_total - self._window_own)
                    peak = 100.0 * max(foreign, 0.0) / wall
                    self._peak_foreign = peak if self._peak_foreign is None else max(self._peak_foreign, peak)
                    self._window_cpu, self._window_own, self._window_started = cpu, own_total, now

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take_sample()

    def start(self) -> DisturbanceSampler:
        if self.name_processes:
            self._processes_before = _all_cpu()
        self._take_sample(first=True)
        self._thread = threading.Thread(target=self._run, name="serveprof-disturbance", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._take_sample()  # the last stretch, shorter than one interval, counts too
        if self.name_processes:
            self._processes_after = _all_cpu()

    def __enter__(self) -> DisturbanceSampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _top_foreign(self, wall: float, own: set[int]) -> list[dict]:
        used = []
        for pid, (name, seconds) in self._processes_after.items():
            if pid in own:
                continue
            before = self._processes_before.get(pid, (name, 0.0))[1]
            if seconds - before > 0:
                used.append({"pid": pid, "name": name, "cpu_pct": 100.0 * (seconds - before) / wall})
        used.sort(key=lambda entry: -entry["cpu_pct"])
        return used[:TOP_FOREIGN]

    def summary(self) -> dict:
        with self._lock:
            wall = self._last - self._started
            if self._first_cpu is None or wall <= 0:
                raise RuntimeError("the disturbance sampler has not run (start() and stop() first)")
            delta = self._last_cpu - self._first_cpu
            own = self._own_seconds()
            own_pids = set(self._latest)
            memory = MemoryProbe.summary(
                self._memory.source, self._first_memory, self._last_memory, wall, self._available_min
            )
            result = {
                "foreign_cpu_pct": 100.0 * max(delta.busy - own, 0.0) / wall,
                "foreign_cpu_peak_pct": self._peak_foreign,
                "own_cpu_pct": 100.0 * own / wall,
                "machine_cpu_pct": 100.0 * delta.busy / wall,
                "irq_pct": 100.0 * delta.irq / wall,
                "steal_pct": 100.0 * delta.steal / delta.total if delta.total > 0 else 0.0,
                "cpus": os.cpu_count(),
                "memory_pressure": memory,
                "top_foreign": self._top_foreign(wall, own_pids) if self.name_processes else [],
                "interval_s": self.interval_s,
                "samples": self._samples,
                "wall_s": wall,
            }
        result["limits"] = asdict(self.limits)
        result["reasons"] = reasons(result, self.limits)
        result["flagged"] = bool(result["reasons"])
        return result


def _named(top: list[dict]) -> str:
    return ", ".join(f"{entry['name']} (pid {entry['pid']}) {entry['cpu_pct']:.0f} %" for entry in top)


def reasons(summary: dict, limits: Limits) -> list[str]:
    """Why a series counts as disturbed, one sentence per limit exceeded (empty: it does not)."""
    found = []
    foreign = summary.get("foreign_cpu_pct")
    if limits.max_foreign_cpu_pct is not None and foreign is not None and foreign > limits.max_foreign_cpu_pct:
        who = _named(summary.get("top_foreign") or [])
        found.append(
            f"other processes used {foreign:.0f} % of a core (limit {limits.max_foreign_cpu_pct:g} %)"
            + (f": {who}" if who else "")
        )
    steal = summary.get("steal_pct")
    if limits.max_steal_pct is not None and steal is not None and steal > limits.max_steal_pct:
        found.append(f"the hypervisor stole {steal:.1f} % of the CPU time (limit {limits.max_steal_pct:g} %)")
    some = (summary.get("memory_pressure") or {}).get("some_pct")
    if limits.max_memory_some_pct is not None and some is not None and some > limits.max_memory_some_pct:
        found.append(f"tasks stalled on memory {some:.1f} % of the time (limit {limits.max_memory_some_pct:g} %)")
    return found
