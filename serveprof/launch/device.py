"""A target device's limits: the CPUs and memory a server may use, and its thread pools.

serveprof.settings builds a ``DeviceSettings`` from a ``devices:`` entry of the config;
the launcher applies it (serveprof/launch/limits.py). The unconstrained ``host`` has no
limits and leaves the server as the ``server:`` block configures it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from serveprof.layout import HOST

# Units a memory size is written with: binary (KiB, MiB, GiB, TiB) and decimal (kB, MB, GB, TB).
MEMORY_UNITS = {
    "B": 1,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
    "TIB": 1024**4,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
}
MEMORY_EXAMPLE = "2GiB, 512MiB or 1.5GB"
MEMORY_TEXT = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*")


def memory_problem(value: object) -> str | None:
    """Why ``value`` is not a memory size such as ``2GiB``, or None when it is one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"{value!r} is not a memory size"
    if isinstance(value, (int, float)):
        return f"{value!r} has no unit (bytes? MiB?)"
    found = MEMORY_TEXT.fullmatch(value)
    if not found:
        return f"{value!r} is not a number followed by a unit"
    number, unit = found.groups()
    if not unit:
        return f"{value!r} has no unit (bytes? MiB?)"
    if unit.upper() not in MEMORY_UNITS:
        if unit.upper() in ("K", "M", "G", "T"):
            return f"{value!r} has the unit {unit!r}, which some tools read as binary and others as decimal"
        return f"{value!r} has the unknown unit {unit!r}"
    if float(number) * MEMORY_UNITS[unit.upper()] < 1024**2:
        return f"{value!r} is less than 1 MiB, which no server runs in"
    return None


def memory_bytes(value: str) -> int:
    """``2GiB`` -> 2147483648; the caller has checked it with ``memory_problem``."""
    problem = memory_problem(value)
    if problem:
        raise ValueError(problem)
    number, unit = MEMORY_TEXT.fullmatch(value).groups()
    return int(float(number) * MEMORY_UNITS[unit.upper()])


def memory_text(size: int) -> str:
    """A byte count as people write it: 536870912 -> "512 MiB", 1610612736 -> "1.5 GiB"."""
    for unit in ("TiB", "GiB", "MiB", "KiB"):
        scale = MEMORY_UNITS[unit.upper()]
        if size >= scale:
            value = size / scale
            return f"{value:.4g} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class DeviceSettings:
    """One ``devices:`` entry, checked, with its thread pools resolved (serveprof.settings builds it)."""

    name: str = HOST
    cpus: float | None = None  # a CPU count; a fraction is a CPU quota
    memory: str | None = None  # as written in the config, e.g. "2GiB"
    intra_op_threads: int | None = None  # None: the server: block's
    inter_op_threads: int | None = None

    @property
    def memory_bytes(self) -> int | None:
        return None if self.memory is None else memory_bytes(self.memory)

    @property
    def constrained(self) -> bool:
        """Whether the server runs under limits (the host does not)."""
        return self.cpus is not None or self.memory is not None

    @property
    def whole_cpus(self) -> int | None:
        """The CPUs the server's threads may spread over: ``cpus`` rounded up (a 1.5-CPU quota runs on 2)."""
        return None if self.cpus is None else max(1, math.ceil(self.cpus - 1e-9))

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "cpus": self.cpus,
            "memory": self.memory,
            "intra_op_threads": self.intra_op_threads,
            "inter_op_threads": self.inter_op_threads,
        }


HOST_DEVICE = DeviceSettings()
