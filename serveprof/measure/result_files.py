"""Writers for the result files users script against (formats fixed in docs/ARCHITECTURE.md).

Every file is written atomically: a reader sees a whole file or none.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from serveprof.atomic import atomic_write_text
from serveprof.errors import ServeprofError

DURATIONS_HEADER = "batch_size, duration"
SUMMARY_CORE = (
    "model",
    "batch_size",
    "count",
    "mean_ms",
    "std_ms",
    "min_ms",
    "max_ms",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "throughput_per_s",
    "first_init_ms",
    "first_aot_ms",
    "requests_target",
    "truncated",
    "truncated_reason",
    "low_sample_percentiles",
    "cpu_util_pct",
    "rss_peak_mb",
    "rss_mean_mb",
    "gpu_util_pct",
    "gpu_mem_mb",
    "protocol",
    "backend",
)
# Columns added later go after the first ones, which stay as they were (scripts read them by
# position too); readers accept files without them (runs kept from before, `serveprof compare`).
DISTURBANCE_COLUMNS = ("disturbed", "foreign_cpu_pct", "steal_pct", "attempts", "disturbance_reasons")
SUMMARY_ADDED = (
    *DISTURBANCE_COLUMNS,
    "server_count",
    "server_mean_ms",
    "server_p50_ms",
    "server_p99_ms",
    "serialization",
)
SUMMARY_COLUMNS = SUMMARY_CORE + SUMMARY_ADDED
COLDSTART_CORE = ("model", "load_ms", "first_infer_ms", "backend", "backend_version")
COLDSTART_ADDED = ("server_load_ms", "warmup_ms", "warmup_records", *DISTURBANCE_COLUMNS)
COLDSTART_COLUMNS = COLDSTART_CORE + COLDSTART_ADDED


def format_ms(value: float) -> str:
    """Four decimals: 0.1 µs, finer than any timer here resolves a request."""
    return f"{value:.4f}"


def latencies_text(latencies_ms: Iterable[float]) -> str:
    return "".join(f"{format_ms(value)}\n" for value in latencies_ms)


def read_latencies(path: str | os.PathLike) -> list[float]:
    return [float(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_json(path: str | os.PathLike, document: Any) -> None:
    # allow_nan=False: NaN is not JSON; a None must be written as null instead.
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False) + "\n")


def write_measurement(
    latencies_path: str | os.PathLike, stats_path: str | os.PathLike, latencies_ms: Sequence[float], stats: Mapping
) -> None:
    """The latency file and the stats JSON of one (model, batch): both or neither."""
    atomic_write_text(latencies_path, latencies_text(latencies_ms))
    try:
        write_json(stats_path, stats)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(latencies_path)
        raise


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_ms(value)
    if isinstance(value, (list, tuple)):
        return ";".join(map(str, value))
    return str(value)


def csv_text(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """Plain comma-separated CSV with a header; missing values are empty cells."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    return buffer.getvalue()


def durations_text(rows: Iterable[tuple[int, float]]) -> str:
    """``<model>.csv``: ``batch_size, duration`` with ``, `` between fields, sorted by batch size."""
    lines = [DURATIONS_HEADER] + [f"{batch}, {format_ms(mean)}" for batch, mean in sorted(rows)]
    return "\n".join(lines) + "\n"


def write_durations(path: str | os.PathLike, rows: Iterable[tuple[int, float]]) -> None:
    atomic_write_text(path, durations_text(rows))


def write_summary(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(path, csv_text(SUMMARY_COLUMNS, sorted(rows, key=lambda row: row["batch_size"])))


def write_coldstart(path: str | os.PathLike, row: Mapping[str, Any]) -> None:
    atomic_write_text(path, csv_text(COLDSTART_COLUMNS, [row]))


def read_json(path: str | os.PathLike, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ServeprofError(f"{what} {path} does not exist", f"run the step that writes the {what} first") from None
    except json.JSONDecodeError as error:
        raise ServeprofError(
            f"{what} {path} is not valid JSON ({error})", f"delete it and rerun the step that writes the {what}"
        ) from None


def read_coldstart(path: str | os.PathLike) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != 1 or not set(COLDSTART_CORE) <= set(rows[0]) <= set(COLDSTART_COLUMNS):
        raise ServeprofError(
            f"{path} is not a cold-start file (one row with columns {', '.join(COLDSTART_COLUMNS)})",
            "delete it and rerun `serveprof coldstart`",
        )
    return rows[0]
