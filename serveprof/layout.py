"""Where results live: one function per dimension, so a new dimension is one more path segment.

A result folder is ``workload/`` + one optional segment per dimension + ``profiling``,
then ``<model>/`` and, for a repeat, ``repeats/r<R>/`` (docs/ARCHITECTURE.md, "Files").
A dimension at its default value adds no segment, so the reference workload's
``workload/profiling/<model>/`` is the folder of the unconstrained ``host`` device and
a single series; any other value adds ``<dimension's folder>/<value>/``:

    workload/profiling/nasnet/                          host
    workload/devices/edge/profiling/nasnet/             device edge
    workload/devices/edge/profiling/nasnet/repeats/r2/  device edge, repeat 2 of measure.repeats

Snakemake sees each segment as a wildcard that is empty at the default
(``"workload/{device}profiling"``, ``{device}`` = ``""`` or ``"devices/edge/"``), so a
rule serves every value of every dimension and a new dimension is one more wildcard
in the pattern. Every folder of every value holds the same files in the same formats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

HOST = "host"  # the unconstrained device: today's layout
WORKLOAD = "workload"
DEVICES = "devices"
REPEATS = "repeats"
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # a device name: one path segment

# The results pattern the rules write to; {device} is device_segment(name).
RESULTS_PATTERN = f"{WORKLOAD}/{{device}}profiling"
# Where a repeat of a series goes inside the model's folder; {repeat} is repeat_segment(r).
REPEAT_PATTERN = "{repeat}"


def device_segment(device: str = HOST) -> str:
    """``""`` for the host, ``devices/<device>/`` for any other device."""
    return "" if device == HOST else f"{DEVICES}/{device}/"


def device_of(segment: str) -> str:
    """The device whose segment is ``segment`` (a ``{device}`` wildcard's value)."""
    if not segment:
        return HOST
    found = re.fullmatch(f"{DEVICES}/({NAME})/", segment)
    if not found:
        raise ValueError(f"{segment!r} is not a device segment (devices/<name>/)")
    return found.group(1)


def repeat_segment(repeat: int | None) -> str:
    """``""`` for the one series of a cell (measure.repeats: 1), ``repeats/r<R>/`` for repeat R of several."""
    return "" if repeat is None else f"{REPEATS}/r{repeat}/"


def repeat_of(segment: str) -> int | None:
    if not segment:
        return None
    found = re.fullmatch(rf"{REPEATS}/r([1-9][0-9]*)/", segment)
    if not found:
        raise ValueError(f"{segment!r} is not a repeat segment (repeats/r<R>/)")
    return int(found.group(1))


def results_dir(device: str = HOST) -> str:
    """The folder that holds one model folder per profiled model, for ``device``."""
    return f"{WORKLOAD}/{device_segment(device)}profiling"


def model_dir(model: str, device: str = HOST) -> str:
    return f"{results_dir(device)}/{model}"


def device_constraint(devices: Iterable[str]) -> str:
    """The ``{device}`` wildcard's regex: the segments of the configured devices (empty for the host)."""
    names = [re.escape(name) for name in devices if name != HOST]
    if not names:
        return "(?:)"  # matches only the empty segment
    alternatives = "|".join(names)
    return f"(?:{DEVICES}/(?:{alternatives})/)?" if HOST in devices else f"(?:{DEVICES}/(?:{alternatives})/)"


def repeat_constraint(repeats: int) -> str:
    """The ``{repeat}`` wildcard's regex: empty for one series per cell, ``repeats/r<R>/`` for several.

    Exactly one of measure_batch and fold_repeats can then make ``stats/b<N>.json``:
    with one repeat the measurement writes it, with several the fold does.
    """
    if repeats <= 1:
        return "(?:)"
    return f"{REPEATS}/r(?:{'|'.join(str(r) for r in range(1, repeats + 1))})/"


def result_roots(root: Path) -> list[tuple[dict[str, str], Path]]:
    """Every results folder under a project folder ``root``, with the dimensions its path names."""
    roots = []
    if (root / WORKLOAD / "profiling").is_dir():
        roots.append(({}, root / WORKLOAD / "profiling"))
    for folder in sorted((root / WORKLOAD / DEVICES).glob("*/profiling")):
        if re.fullmatch(NAME, folder.parent.name):
            roots.append(({"device": folder.parent.name}, folder))
    return roots
