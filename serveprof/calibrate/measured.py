"""The on-device measurements a user brings: a CSV, checked before anything is fitted.

Columns: ``model, batch_size, device, latency_ms`` and optionally ``peak_memory_mb``
(docs/calibration.md; an example is docs/examples/device_measurements.csv). Rows
repeating a (device, model, batch size) are repeats of one measurement: their mean is
used and ``repeats`` counts them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from serveprof.errors import ServeprofError

REQUIRED = ("model", "batch_size", "device", "latency_ms")
OPTIONAL = ("peak_memory_mb",)
UNITS = {"batch_size": "a whole number", "latency_ms": "milliseconds", "peak_memory_mb": "MiB"}
EXAMPLE = "docs/examples/device_measurements.csv"


def read_measured(path: Path) -> pd.DataFrame:
    """One row per (device, model, batch_size): latency_ms, peak_memory_mb (NaN if absent), repeats."""
    path = Path(path)
    if not path.is_file():
        raise ServeprofError(
            f"on-device measurements {path} do not exist", f"pass the CSV of your device runs (format: {EXAMPLE})"
        )
    try:
        frame = pd.read_csv(path, skipinitialspace=True, comment="#")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ServeprofError(
            f"{path} is not a readable CSV file ({error})",
            f"write it as comma-separated values with a header, as in {EXAMPLE}",
        ) from None
    frame.columns = [str(column).strip() for column in frame.columns]
    absent = [column for column in REQUIRED if column not in frame.columns]
    if absent:
        raise ServeprofError(
            f"{path} lacks the column(s) {', '.join(absent)} (it has {', '.join(frame.columns)})",
            f"give the columns {', '.join(REQUIRED)}[, peak_memory_mb] in a header row, as in {EXAMPLE}",
        )
    if frame.empty:
        raise ServeprofError(
            f"{path} has no rows", "add one row per (model, batch_size, device) you measured on the device"
        )
    for column in OPTIONAL:
        if column not in frame.columns:
            frame[column] = float("nan")
    for column in ("batch_size", "latency_ms", "peak_memory_mb"):
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & converted.isna()
        if bad.any() or (column != "peak_memory_mb" and converted.isna().any()):
            where = int((bad | converted.isna()).idxmax()) + 2  # +1 for the header, +1 for counting from one
            raise ServeprofError(
                f"{path}, line {where}: {column} is {frame.at[where - 2, column]!r}, not a number",
                f"write {column} as a plain number ({UNITS[column]})",
            )
        frame[column] = converted
    if (frame["latency_ms"] <= 0).any() or (frame["batch_size"] < 1).any() or (frame["batch_size"] % 1 != 0).any():
        raise ServeprofError(f"{path} holds a latency of 0 or less, or a batch size that is not a whole number of 1 or more",
                             "check the rows: latencies are positive milliseconds, batch sizes whole numbers")  # fmt: skip
    frame["batch_size"] = frame["batch_size"].astype(int)
    for column in ("model", "device"):
        frame[column] = frame[column].astype(str).str.strip()
    grouped = frame.groupby(["device", "model", "batch_size"], sort=False)
    measured = grouped.agg(
        latency_ms=("latency_ms", "mean"), peak_memory_mb=("peak_memory_mb", "mean"), repeats=("latency_ms", "size")
    )
    return measured.reset_index()
