"""The ``load:`` block as typed settings, and the (scenario, point) pairs it names.

A **scenario** is one way of loading one server configuration: ``closed`` (the
``concurrency`` points) or ``open`` (the ``request_rate`` points) against the server
as ``server:`` configures it, and ``closed-<batching>`` / ``open-<batching>`` for each
combination of the ``load.batching`` grid (``closed-mbs8-t2000-th2``: max_batch_size 8,
batch_timeout_micros 2000, num_batch_threads 2). A **point** is one load level:
``c<N>`` (N closed-loop clients) or ``r<R>`` (R requests/s, open loop). Each point is
one job with a fresh server.

Grid combinations whose ``allowed_batch_sizes`` do not end at their ``max_batch_size``
are left out, since TF Serving refuses them; ``problems`` names a grid or a
``server.batching`` block that cannot give any. Nothing here reads a config:
serveprof.settings builds these from the checked block.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.load.windows import WindowRule

MODES = ("closed", "open")
# BatchingParameters fields the grid may vary, with the short names scenario names use.
GRID_KEYS = {
    "max_batch_size": "mbs",
    "batch_timeout_micros": "t",
    "num_batch_threads": "th",
    "max_enqueued_batches": "q",
    "allowed_batch_sizes": "a",
    "pad_variable_length_inputs": "pad",
}
DEFAULT_MAX_BATCH_SIZE = 1000  # the scheduler's, when no file sets it
POINT_PATTERN = r"c[1-9][0-9]*|r[0-9]+(?:\.[0-9]+)?"
SCENARIO_PATTERN = r"(?:closed|open)(?:-[A-Za-z0-9.]+)*"


@dataclass(frozen=True)
class LoadPoint:
    """One job: a scenario's server configuration at one load level."""

    scenario: str
    point: str
    mode: str  # "closed" or "open"
    level: float  # clients (closed) or requests/s (open)
    batching: Mapping[str, Any] | None  # the server's BatchingParameters (None: batching off)

    @property
    def concurrency(self) -> int | None:
        return int(self.level) if self.mode == "closed" else None

    @property
    def rate_per_s(self) -> float | None:
        return self.level if self.mode == "open" else None


@dataclass(frozen=True)
class PointSettings:
    """How one point is measured (the job's ``--load``): everything but the server and the load level."""

    batch_size: int
    arrival: str
    seed: int
    window_s: float | None
    window_requests: int | None
    stable_windows: int
    max_windows: int
    stability_pct: float
    warmup_s: float
    max_in_flight: int
    processes: int  # 0: as many as the connections need (``processes_for``)
    schedule_tolerance_ms: float
    resource_interval_s: float

    @property
    def rule(self) -> WindowRule:
        return WindowRule(
            None if self.window_requests else self.window_s,
            self.window_requests,
            self.stable_windows,
            self.max_windows,
            self.stability_pct,
        )


@dataclass(frozen=True)
class LoadSettings:
    """The whole ``load:`` block, defaults filled."""

    models: tuple[str, ...] | None
    concurrency: tuple[int, ...]
    request_rate: tuple[float, ...]
    batching: Mapping[str, tuple]
    slo_p99_ms: float | None
    point: PointSettings

    @property
    def enabled(self) -> bool:
        return bool(self.concurrency or self.request_rate)


CONNECTIONS_PER_PROCESS = 16  # one process's lean connections keep up with a trivial model at 16 (docs/load.md)


def processes_for(connections: int, wanted: int, cpus: int) -> int:
    """Worker processes for ``connections``: ``wanted``, or with 0 one per 16 connections, at most one per CPU."""
    if wanted:
        return max(1, min(wanted, connections))
    return max(1, min(cpus, math.ceil(connections / CONNECTIONS_PER_PROCESS)))


def rate_text(rate: float) -> str:
    """``12.5`` -> ``12.5``, ``50.0`` -> ``50``: a point name without exponents or signs."""
    text = f"{rate:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def point_name(mode: str, level: float) -> str:
    return f"c{int(level)}" if mode == "closed" else f"r{rate_text(level)}"


def parse_point(scenario: str, point: str, batching: Mapping[str, Any] | None) -> LoadPoint:
    """The LoadPoint a (scenario, point) name pair stands for, served with ``batching``."""
    import re

    mode = scenario.split("-", 1)[0]
    if not re.fullmatch(SCENARIO_PATTERN, scenario) or not re.fullmatch(POINT_PATTERN, point):
        raise ServeprofError(
            f"{scenario}/{point} is not a load scenario and point",
            "name a scenario closed[-<batching>] or open[-<batching>] and a point c<clients> or r<requests/s>, "
            "e.g. --scenario closed --point c8",
        )
    if (mode == "closed") != point.startswith("c"):
        raise ServeprofError(
            f"point {point} does not belong to scenario {scenario}",
            "closed scenarios take c<clients> points, open ones r<requests/s>",
        )
    return LoadPoint(scenario, point, mode, float(point[1:]), dict(batching) if batching is not None else None)


def _value_text(key: str, value: Any) -> str:
    if key == "allowed_batch_sizes":
        return ".".join(str(size) for size in value)
    if key == "pad_variable_length_inputs":
        return "1" if value else "0"
    return str(value)


def batching_label(changes: Mapping[str, Any]) -> str:
    """The part of a scenario name that says which grid combination it is."""
    return "-".join(f"{GRID_KEYS[key]}{_value_text(key, changes[key])}" for key in GRID_KEYS if key in changes)


def describe_batching(batching: Mapping[str, Any] | None) -> str:
    """For figure legends: ``batching off`` or ``max_batch_size 8, batch_timeout_micros 2000``."""
    if batching is None:
        return "batching off"
    if not batching:
        return "batching, TF Serving's defaults"
    return ", ".join(f"{key} {_value_text(key, value).replace('.', '/')}" for key, value in batching.items())


def _allowed_ends_right(batching: Mapping[str, Any]) -> bool:
    allowed = batching.get("allowed_batch_sizes")
    return not allowed or allowed[-1] == batching.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)


def grid(base: Mapping[str, Any] | None, axes: Mapping[str, Sequence]) -> list[tuple[str, dict]]:
    """(label, BatchingParameters) for each usable combination of ``axes`` over ``base``."""
    if not axes:
        return []
    keys = [key for key in GRID_KEYS if key in axes]
    combinations = []
    for values in itertools.product(*(axes[key] for key in keys)):
        changes = {
            key: list(value) if isinstance(value, tuple) else value for key, value in zip(keys, values, strict=True)
        }
        batching = {**(base or {}), **changes}
        if _allowed_ends_right(batching):
            combinations.append((batching_label(changes), batching))
    return combinations


def points(load: LoadSettings, server_batching: Mapping[str, Any] | None) -> list[LoadPoint]:
    """Every (scenario, point) of ``load``, in a stable order: the server as configured first, then the grid."""
    configurations = [("", dict(server_batching) if server_batching is not None else None)]
    configurations += grid(server_batching, load.batching)
    found = []
    for label, batching in configurations:
        for mode, levels in (("closed", load.concurrency), ("open", load.request_rate)):
            scenario = f"{mode}-{label}" if label else mode
            for level in levels:
                found.append(LoadPoint(scenario, point_name(mode, level), mode, float(level), batching))
    return found


# ------------------------------------------------------------------ checks (serveprof.config_problems calls these)


def _allowed_problem(where: str, allowed: Sequence[int]) -> tuple[str, str, str] | None:
    if any(later <= earlier for earlier, later in itertools.pairwise(allowed)):
        return (
            where,
            f"{list(allowed)} is not increasing (TF Serving: allowed_batch_sizes entries must be monotonically "
            "increasing)",
            "list the allowed batch sizes from smallest to largest, each once",
        )
    return None


def batching_problems(server_batching: Any) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for a ``server.batching`` block TF Serving would refuse (the schema checked its types)."""
    if not isinstance(server_batching, Mapping):
        return []
    allowed = server_batching.get("allowed_batch_sizes")
    if not isinstance(allowed, list) or not allowed or not all(isinstance(size, int) for size in allowed):
        return []
    problem = _allowed_problem("server.batching.allowed_batch_sizes", allowed)
    if problem:
        return [problem]
    largest = server_batching.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    if isinstance(largest, int) and allowed[-1] != largest:
        return [
            (
                "server.batching.allowed_batch_sizes",
                f"its last entry, {allowed[-1]}, is not max_batch_size ({largest}{'' if 'max_batch_size' in server_batching else ', the default'}); "
                "TF Serving refuses that (Last entry in allowed_batch_sizes must match max_batch_size)",
                f"end allowed_batch_sizes with {largest}, or set server.batching.max_batch_size to {allowed[-1]}",
            )
        ]
    return []


def load_problems(load: Any, server_batching: Any, models: Sequence[str]) -> list[tuple[str, str, str]]:
    """(key, problem, fix) for what the schema cannot see in a ``load:`` block."""
    if not isinstance(load, Mapping):
        return []
    found = []
    for index, model in enumerate(load.get("models") or []):
        if isinstance(model, str) and model not in models:
            found.append(
                (
                    f"load.models[{index}]",
                    f"{model!r} is not a configured model",
                    f"name models from models: ({', '.join(models) or 'none'}), or set load.models to null for all",
                )
            )
    stable, most = load.get("stable_windows", 3), load.get("max_windows", 10)
    if isinstance(stable, int) and isinstance(most, int) and most < stable:
        found.append(
            (
                "load.max_windows",
                f"{most} is fewer than load.stable_windows ({stable}), so no point could ever be found stable",
                f"set load.max_windows to {stable} or more",
            )
        )
    axes = load.get("batching")
    if isinstance(axes, Mapping) and axes:
        found += _grid_problems(axes, server_batching if isinstance(server_batching, Mapping) else None)
    batch_size = load.get("batch_size", 1)
    if isinstance(batch_size, int) and (load.get("concurrency") or load.get("request_rate")):
        found += _batch_size_problems(batch_size, axes if isinstance(axes, Mapping) else {}, server_batching)
    return found


def _grid_problems(axes: Mapping[str, Any], base: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    found = []
    allowed_lists = axes.get("allowed_batch_sizes")
    if isinstance(allowed_lists, list):
        for index, allowed in enumerate(allowed_lists):
            if isinstance(allowed, list) and allowed and all(isinstance(size, int) for size in allowed):
                problem = _allowed_problem(f"load.batching.allowed_batch_sizes[{index}]", allowed)
                if problem:
                    found.append(problem)
    if found or not all(isinstance(values, list) and values for values in axes.values()):
        return found  # the schema explains empty or mistyped axes
    if isinstance(allowed_lists, list):
        sizes = axes.get("max_batch_size") or [(base or {}).get("max_batch_size", DEFAULT_MAX_BATCH_SIZE)]
        for index, allowed in enumerate(allowed_lists):
            if allowed and allowed[-1] not in sizes:
                found.append(
                    (
                        f"load.batching.allowed_batch_sizes[{index}]",
                        f"{allowed} ends at {allowed[-1]}, which is none of the max_batch_size values "
                        f"({', '.join(map(str, sizes))}), so no combination of the grid can use it (TF Serving: "
                        "Last entry in allowed_batch_sizes must match max_batch_size)",
                        "end each allowed_batch_sizes list at one of the max_batch_size values",
                    )
                )
    return found


def _batch_size_problems(batch_size: int, axes: Mapping[str, Any], base: Any) -> list[tuple[str, str, str]]:
    found = []
    base_size = base.get("max_batch_size") if isinstance(base, Mapping) else None
    if isinstance(base_size, int) and base_size < batch_size:
        found.append(
            (
                "server.batching.max_batch_size",
                f"{base_size} is smaller than load.batch_size ({batch_size}): every request would be refused",
                f"set server.batching.max_batch_size to {batch_size} or more, or lower load.batch_size",
            )
        )
    sizes = axes.get("max_batch_size")
    if isinstance(sizes, list):
        for index, size in enumerate(sizes):
            if isinstance(size, int) and size < batch_size:
                found.append(
                    (
                        f"load.batching.max_batch_size[{index}]",
                        f"{size} is smaller than load.batch_size ({batch_size}): every request would be refused",
                        f"use max_batch_size values of {batch_size} or more, or lower load.batch_size",
                    )
                )
    return found
