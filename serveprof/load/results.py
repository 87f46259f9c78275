"""A load point's files, and the summary table of a model's points (formats: docs/ARCHITECTURE.md).

- ``workload/load/<model>/<scenario>/<point>.csv``: one row per request answered in the
  measured windows, ``window, scheduled_ms, sent_ms, done_ms, latency_ms, status``; times
  in ms from the first window's start, latency from the scheduled time;
- ``<point>.json``: everything the point measured (``serveprof.load.point``);
- ``workload/load/<model>/summary.csv``: one row per point, ``SUMMARY_COLUMNS``.

The CSV and the JSON are written together or not at all.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from serveprof.atomic import atomic_write_text
from serveprof.errors import ServeprofError
from serveprof.load.scenarios import describe_batching
from serveprof.load.windows import DONE, DUE, SENT, STATUS
from serveprof.measure.result_files import write_json

REQUEST_COLUMNS = ("window", "scheduled_ms", "sent_ms", "done_ms", "latency_ms", "status")
SUMMARY_COLUMNS = (
    "model",
    "scenario",
    "point",
    "mode",
    "concurrency",
    "target_rate_per_s",
    "achieved_rate_per_s",
    "batch_size",
    "batching",
    "count",
    "throughput_per_s",
    "requests_per_s",
    "mean_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "low_sample_percentiles",
    "errors",
    "error_count",
    "stable",
    "windows",
    "schedule_kept",
    "late_pct",
    "cpu_util_pct",
    "rss_peak_mb",
    "server_p50_ms",
    "server_p99_ms",
    "server_batches",
    "server_mean_batch_size",
    "disturbed",
    "backend",
)


def requests_text(rows: np.ndarray, statuses: list[str], start_ns: int) -> str:
    """The per-request CSV of ``rows`` (RECORD_FIELDS plus the window), ordered by answer time."""
    ordered = rows[np.lexsort((rows[:, DONE], rows[:, -1]))]
    out = io.StringIO()
    out.write(",".join(REQUEST_COLUMNS) + "\n")
    names = np.array(statuses, dtype=object)
    due = (ordered[:, DUE] - start_ns) / 1e6
    sent = (ordered[:, SENT] - start_ns) / 1e6
    done = (ordered[:, DONE] - start_ns) / 1e6
    latency = (ordered[:, DONE] - ordered[:, DUE]) / 1e6
    for window, scheduled, sent_ms, done_ms, latency_ms, status in zip(
        ordered[:, -1], due, sent, done, latency, names[ordered[:, STATUS]], strict=True
    ):
        out.write(f"{window},{scheduled:.4f},{sent_ms:.4f},{done_ms:.4f},{latency_ms:.4f},{status}\n")
    return out.getvalue()


def write_point(csv_path: str | os.PathLike, json_path: str | os.PathLike, text: str, document: Mapping) -> None:
    """Both files of a point, or neither."""
    atomic_write_text(csv_path, text)
    try:
        write_json(json_path, document)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(csv_path)
        raise


def read_point(path: str | os.PathLike) -> dict:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ServeprofError(
            f"cannot read the load point {path} ({error})", "rerun the point (delete it, then run the workflow)"
        ) from None
    if not isinstance(document, dict) or "stats" not in document:
        raise ServeprofError(f"{path} is not a load point's JSON", "rerun the point (delete it, then run the workflow)")
    return document


def summary_row(model: str, document: Mapping) -> dict:
    stats = document["stats"]
    schedule = document.get("schedule") or {}
    resources = document.get("resources") or {}
    server = document.get("server_metrics") or {}
    request_latency = server.get("request_latency") or {}
    batching = server.get("batching") or {}
    errors = stats.get("errors") or {}
    return {
        "model": model,
        "scenario": document["scenario"],
        "point": document["point"],
        "mode": document["mode"],
        "concurrency": document.get("concurrency"),
        "target_rate_per_s": document.get("target_rate_per_s"),
        "achieved_rate_per_s": schedule.get("achieved_rate_per_s"),
        "batch_size": document["batch_size"],
        "batching": describe_batching(document.get("batching")),
        "count": stats.get("count"),
        "throughput_per_s": stats.get("throughput_per_s"),
        "requests_per_s": stats.get("requests_per_s"),
        "mean_ms": stats.get("mean_ms"),
        "p50_ms": stats.get("p50_ms"),
        "p90_ms": stats.get("p90_ms"),
        "p95_ms": stats.get("p95_ms"),
        "p99_ms": stats.get("p99_ms"),
        "low_sample_percentiles": " ".join(stats.get("low_sample_percentiles") or []),
        "errors": " ".join(f"{code}:{count}" for code, count in sorted(errors.items())),
        "error_count": sum(errors.values()),
        "stable": bool(document.get("stable")),
        "windows": document.get("windows_measured"),
        "schedule_kept": schedule.get("kept"),
        "late_pct": schedule.get("late_pct"),
        "cpu_util_pct": resources.get("cpu_util_pct"),
        "rss_peak_mb": resources.get("rss_peak_mb"),
        "server_p50_ms": request_latency.get("p50_ms"),
        "server_p99_ms": request_latency.get("p99_ms"),
        "server_batches": batching.get("batches"),
        "server_mean_batch_size": batching.get("mean_batch_size"),
        "disturbed": (document.get("disturbance") or {}).get("flagged"),
        "backend": (document.get("server") or {}).get("backend"),
    }


def write_summary(path: str | os.PathLike, rows: Iterable[Mapping]) -> None:
    import pandas as pd

    frame = pd.DataFrame(list(rows), columns=list(SUMMARY_COLUMNS))
    atomic_write_text(path, frame.to_csv(index=False))


def read_requests(path: str | os.PathLike):
    """A point's per-request CSV as a DataFrame."""
    import pandas as pd

    return pd.read_csv(path)
