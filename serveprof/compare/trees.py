"""A result tree as a set of series, whatever dimensions name them.

A *series* is one timed set of requests: its raw latencies, its summary numbers and
the provenance of the run that measured it. A *walker* knows one layout and yields
its series, each keyed by its dimensions (``model``, ``batch``, and for other layouts
``device``, ``variant``, ``scenario``, ``point``). Two trees are compared key by key,
so a new layout (load points, variants, devices) is one more walker in ``WALKERS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from serveprof.errors import ServeprofError

# The order dimensions are shown in: the outer grouping first, the batch size last.
DIMENSIONS = ("device", "variant", "model", "scenario", "point", "batch")
PROFILING = Path("workload/profiling")
DEVICES = Path("workload/devices")
LOAD = Path("workload/load")
VARIANTS = Path("workload/variants")
VARIANT_STATUSES = Path("data/model/variants")  # <model>/<variant>.json, the export's status (docs/variants.md)
# The export facts of a variant's status that can explain a change between two runs of it.
VARIANT_FACTS = ("status", "format", "server_flags", "size_bytes", "notes")


@dataclass(frozen=True)
class Series:
    """One timed series of a result tree."""

    dims: dict[str, str]  # e.g. {"model": "nasnet", "batch": "4"}
    latencies: Callable[[], np.ndarray]  # the raw latencies in ms, read when asked
    batch_size: int
    count: int | None
    throughput_per_s: float | None
    peak_memory_mb: float | None
    stats: dict = field(default_factory=dict)  # the series' stats JSON, {} where there is none
    provenance: dict = field(default_factory=dict)  # the run's provenance for this series' model
    source: str = ""  # the file the latencies come from, for messages

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple((name, self.dims[name]) for name in DIMENSIONS if name in self.dims)

    @property
    def label(self) -> str:
        return series_label(self.dims)

    @property
    def disturbance(self) -> dict | None:
        return self.stats.get("disturbance")

    def parts(self) -> list[np.ndarray]:
        """The latencies split into the repeats they were measured in (``measure.repeats``), or whole.

        A folded cell's file holds its repeats' latencies in repeat order, and its stats
        JSON's ``repeats.series`` counts each (serveprof/measure/repeats.py)."""
        latencies = self.latencies()
        counts = [one.get("count") for one in (self.stats.get("repeats") or {}).get("series") or []]
        if len(counts) < 2:
            return [latencies]
        if any(not isinstance(count, int) or count < 1 for count in counts) or sum(counts) != latencies.size:
            raise ServeprofError(
                f"{self.source} holds {latencies.size} latencies, but its stats count repeats of {counts}",
                "rerun the fold_repeats step of that cell (or the cell), so the two files agree",
            )
        return np.split(latencies, np.cumsum(counts)[:-1])


def series_label(dims: dict[str, str]) -> str:
    """``nasnet b4``; other dimensions as ``name=value`` before it (``device=edge nasnet b4``)."""
    parts = [f"{name}={dims[name]}" for name in DIMENSIONS if name in dims and name not in ("model", "batch")]
    if "model" in dims:
        parts.append(dims["model"])
    if "batch" in dims:
        parts.append(f"b{dims['batch']}")
    return " ".join(parts)


class Walker(Protocol):
    name: str

    def walk(self, root: Path) -> Iterator[Series]:
        """Every series of this layout under ``root`` (none if the layout is absent)."""


def _optional_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ServeprofError(
            f"{path} is not valid JSON ({error})", "restore the file from the run, or rerun the step that wrote it"
        ) from None
    return data if isinstance(data, dict) else {}


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def profiling_dirs(root: Path) -> Iterator[Path]:
    """Folders of model results: ``root/workload/profiling``, ``root/profiling`` (``root``
    is a ``workload`` folder), or ``root`` itself when it holds model folders."""
    for candidate in (root / PROFILING, root / PROFILING.name):
        if candidate.is_dir():
            yield candidate
            return
    if any(root.glob("*/summary.csv")):
        yield root


def walk_profiling(results: Path, extra: dict[str, str] | None = None) -> Iterator[Series]:
    """The series of a ``workload/profiling`` layout: one per (model, batch size)."""
    from serveprof.report.results import load_latencies, load_summary

    for folder in sorted(path.parent for path in results.glob("*/summary.csv")):
        model = folder.name
        summary = load_summary(results, [model])
        provenance = _optional_json(folder / "provenance.json")
        for row in summary.to_dict("records"):
            batch = int(row["batch_size"])
            yield Series(
                dims={**(extra or {}), "model": model, "batch": str(batch)},
                latencies=lambda batch=batch, model=model: load_latencies(results, model, [batch])[batch],
                batch_size=batch,
                count=int(row["count"]) if _number(row["count"]) is not None else None,
                throughput_per_s=_number(row["throughput_per_s"]),
                peak_memory_mb=_number(row["rss_peak_mb"]),
                stats=_optional_json(folder / "stats" / f"b{batch}.json"),
                provenance=provenance,
                source=str(folder / f"{model}-b{batch}.csv"),
            )


class ProfilingWalker:
    """Today's layout: ``workload/profiling/<model>/`` (docs/ARCHITECTURE.md)."""

    name = "profiling"

    def walk(self, root: Path) -> Iterator[Series]:
        for results in profiling_dirs(root):
            yield from walk_profiling(results)


class DevicesWalker:
    """Per-device runs: ``workload/devices/<device>/profiling/<model>/``, the same files per device."""

    name = "devices"

    def walk(self, root: Path) -> Iterator[Series]:
        for results in sorted((root / DEVICES).glob("*/profiling")):
            yield from walk_profiling(results, {"device": results.parent.name})


class VariantsWalker:
    """Model variants: ``workload/variants/<variant>/profiling/<model>/``, the files of ``workload/profiling``.

    fp32 is today's layout (ProfilingWalker). A variant's provenance adds its export's
    facts (``variant_format``, ``variant_server_flags``, ...) where the run kept the
    export status (``data/model/variants/<model>/<variant>.json``), so a rebuilt variant
    shows among the differences that could explain a change.
    """

    name = "variants"

    def walk(self, root: Path) -> Iterator[Series]:
        for results in sorted((root / VARIANTS).glob("*/profiling")):
            variant = results.parent.name
            for one in walk_profiling(results, {"variant": variant}):
                status = _optional_json(root / VARIANT_STATUSES / one.dims["model"] / f"{variant}.json")
                facts = {f"variant_{name}": status[name] for name in VARIANT_FACTS if name in status}
                yield replace(one, provenance={**one.provenance, **facts})


class LoadWalker:
    """Load points: ``workload/load/<model>/<scenario>/<point>.{csv,json}`` (docs/load.md).

    A point's latencies are those of its OK requests in the windows its statistics
    come from (the JSON's ``summary_windows``), counted from each request's scheduled time.
    """

    name = "load"

    def walk(self, root: Path) -> Iterator[Series]:
        for document_path in sorted((root / LOAD).glob("*/*/*.json")):
            requests = document_path.with_suffix(".csv")
            if not requests.is_file():
                continue
            document = _optional_json(document_path)
            stats = document.get("stats") or {}
            first, last = document.get("summary_windows") or (None, None)
            model = document_path.parent.parent.name
            yield Series(
                dims={"model": model, "scenario": document_path.parent.name, "point": document_path.stem},
                latencies=lambda path=requests, first=first, last=last: load_latencies(path, first, last),
                batch_size=int(document.get("batch_size") or 1),
                count=stats.get("count"),
                throughput_per_s=_number(stats.get("throughput_per_s")),
                peak_memory_mb=_number((document.get("resources") or {}).get("rss_peak_mb")),
                stats=document,
                provenance=_load_provenance(document),
                source=str(requests),
            )


def load_latencies(path: Path, first: int | None, last: int | None) -> np.ndarray:
    """The OK requests' latencies (ms) of a load point's CSV, within windows ``first``..``last``."""
    import pandas as pd

    rows = pd.read_csv(path, usecols=["window", "latency_ms", "status"])
    rows = rows[rows["status"] == "OK"]
    if first is not None and last is not None:
        rows = rows[(rows["window"] >= first) & (rows["window"] <= last)]
    return rows["latency_ms"].to_numpy(dtype=float)


def _load_provenance(document: dict) -> dict:
    """What compare lists of a point's run, from the point's own JSON (load points have no provenance.json)."""
    server = document.get("server") or {}
    host = document.get("provenance") or {}
    return {
        **host,
        "backend": server.get("backend"),
        "backend_version": server.get("version"),
        "protocol": document.get("protocol"),
        "client_transport": document.get("transport"),
    }


WALKERS: tuple[Walker, ...] = (ProfilingWalker(), DevicesWalker(), VariantsWalker(), LoadWalker())


@dataclass
class ResultTree:
    root: Path
    label: str
    series: dict[tuple, Series]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(series.dims.get("model", "") for series in self.series.values()))


def read_tree(root: Path, label: str | None = None, walkers: tuple[Walker, ...] = WALKERS) -> ResultTree:
    """Every series under ``root`` that any walker recognises."""
    root = Path(root)
    if not root.is_dir():
        raise ServeprofError(
            f"result tree {root} is not a folder",
            "pass a project folder (holding workload/), a workload/profiling folder, or a run name under runs/",
        )
    series: dict[tuple, Series] = {}
    for walker in walkers:
        for one in walker.walk(root):
            series[one.key] = one
    if not series:
        raise ServeprofError(
            f"{root} holds no results (no workload/profiling/<model>/summary.csv, workload/load/<model>/ or other known layout)",
            "pass the folder that holds workload/ (or a run kept with `serveprof snapshot NAME`), after the workflow has run",
        )
    return ResultTree(root=root, label=label or str(root), series=series)
