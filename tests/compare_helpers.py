"""Synthetic runs for the compare and snapshot tests, written with the measurement's own writers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from serveprof.measure.repeats import fold
from serveprof.measure.result_files import latencies_text, write_coldstart, write_durations, write_json, write_summary
from serveprof.measure.stats import latency_stats

PROVENANCE = {
    "source": "keras", "weights": "imagenet", "backend": "embedded", "backend_version": "serveprof 0.1.0 (TensorFlow 2.21.0)",
    "tensorflow_version": "2.21.0", "image": None, "image_digest": None, "gpu_used": False, "protocol": "grpc",
    "client_transport": "builtin", "server_notes": None, "serveprof_version": "0.1.0", "python_version": "3.11.2",
    "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu_count": 2, "gpu": None, "hostname": "bench-01",
    "config_hash": "a94b02c7e5d1f380", "git_revision": "05c4221d3b8e", "git_dirty": False,
    "started_at": "2026-11-25T14:17:00+00:00",
}  # fmt: skip


def latencies(rng: np.random.Generator, typical_ms: float, count: int, spread: float = 0.08) -> np.ndarray:
    """Skewed latencies as a server gives them: lognormal body, exponential tail, 0.1 µs resolution."""
    return np.round(typical_ms * rng.lognormal(0.0, spread, count) + rng.exponential(typical_ms * 0.02, count), 4)


def write_run(
    root: Path,
    series: Mapping[str, Mapping[int, np.ndarray]],
    provenance: Mapping[str, Mapping] | None = None,
    disturbance: Mapping[tuple[str, int], dict] | None = None,
    rss_mb: Mapping[tuple[str, int], float] | None = None,
    stats_files: bool = True,
    under: str = "workload/profiling",
) -> Path:
    """``root/<under>/<model>/...`` for ``{model: {batch: latencies}}``; returns that folder.

    A list of arrays for a batch is that cell's repeats, folded as ``serveprof fold`` folds them."""
    profiling = Path(root) / under
    for model, batches in series.items():
        folder = profiling / model
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for batch, values in batches.items():
            folded = None
            if isinstance(values, list):
                documents = [{"model": model, "batch_size": batch, "repeat": number, "stats": latency_stats(part, batch)}
                             for number, part in enumerate(values, 1)]  # fmt: skip
                values, folded = fold(documents, values, max_cv_pct=3.0)
            stats = latency_stats(values, batch)
            (folder / f"{model}-b{batch}.csv").write_text(latencies_text(values))
            rss = (rss_mb or {}).get((model, batch), 700.0 + 60 * batch)
            rows.append({"model": model, "batch_size": batch, **stats, "first_init_ms": 100.0, "first_aot_ms": 50.0,
                         "requests_target": len(values), "truncated": False, "truncated_reason": None,
                         "cpu_util_pct": 150.0, "rss_peak_mb": rss, "rss_mean_mb": rss - 20, "gpu_util_pct": None,
                         "gpu_mem_mb": None, "protocol": "grpc", "backend": "embedded"})  # fmt: skip
            if stats_files:
                document = folded or {"model": model, "batch_size": batch, "stats": stats}
                if disturbance and (model, batch) in disturbance:
                    document["disturbance"] = disturbance[(model, batch)]
                write_json(folder / "stats" / f"b{batch}.json", document)
        write_summary(folder / "summary.csv", rows)
        write_durations(folder / f"{model}.csv", [(row["batch_size"], row["mean_ms"]) for row in rows])
        write_coldstart(folder / "coldstart.csv", {"model": model, "load_ms": 3000.0, "first_infer_ms": 900.0,
                                                   "backend": "embedded", "backend_version": "serveprof 0.1.0"})  # fmt: skip
        document = {"model": model, **PROVENANCE, **((provenance or {}).get(model) or {})}
        (folder / "provenance.json").write_text(json.dumps(document, indent=2))
    (profiling / "all").write_text("profiled: " + " ".join(series) + "\n")
    return profiling


LOAD_STATUSES = ["OK", "UNAVAILABLE"]


def write_load_point(
    root: Path,
    model: str,
    scenario: str,
    point: str,
    windows: list[np.ndarray],
    summary_windows: int = 3,
    errors: int = 0,
) -> dict:
    """``root/workload/load/<model>/<scenario>/<point>.{csv,json}`` with the load writers, one 1 s window per
    latency array (``done`` spread over the window, ``due`` = ``done`` - latency); the last ``summary_windows``
    give the statistics, and each of them also holds ``errors`` failed answers. Returns the point's JSON."""
    from serveprof.load.results import requests_text, write_point
    from serveprof.load.windows import Window, point_stats

    start_ns = 10**12
    final = []
    for index, values in enumerate(windows):
        begin = start_ns + index * 10**9
        failed = errors if index >= len(windows) - summary_windows else 0
        done = begin + np.linspace(1000, 10**9 - 1000, len(values) + failed).astype(np.int64)
        latency_ns = np.concatenate([np.round(values * 1e6), np.full(failed, 5e5)]).astype(np.int64)
        status = np.concatenate([np.zeros(len(values)), np.ones(failed)]).astype(np.int64)
        due = done - latency_ns
        rows = np.column_stack([due, due, due, done, status, np.zeros(len(done), np.int64)])
        final.append(Window(index, begin, begin + 10**9, rows))
    used = final[-summary_windows:]
    table = np.concatenate([np.column_stack([w.rows, np.full(len(w.rows), w.index)]) for w in final])
    document = {
        "scenario": scenario, "point": point, "mode": "closed", "concurrency": int(point.lstrip("c")),
        "target_rate_per_s": None, "batch_size": 1, "batching": None, "stable": True,
        "windows_measured": len(final), "summary_windows": [used[0].index, used[-1].index],
        "stats": point_stats(used, 1, LOAD_STATUSES), "schedule": None,
        "resources": {"cpu_util_pct": 150.0, "rss_peak_mb": 420.0},
        "protocol": "grpc", "transport": "builtin",
        "server": {"backend": "embedded", "version": "serveprof 0.1.0 (TensorFlow 2.21.0)", "pid": 4242},
        "provenance": {key: PROVENANCE[key] for key in ("serveprof_version", "cpu_model", "cpu_count", "hostname")},
    }  # fmt: skip
    folder = Path(root) / "workload" / "load" / model / scenario
    folder.mkdir(parents=True, exist_ok=True)
    write_point(
        folder / f"{point}.csv", folder / f"{point}.json", requests_text(table, LOAD_STATUSES, start_ns), document
    )
    return document
