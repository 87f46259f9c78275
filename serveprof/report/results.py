"""Read a run's result files into tidy DataFrames. Read-only: nothing here measures.

Every loader checks the files against the contract in docs/ARCHITECTURE.md and names
the file and the fix when something is missing or malformed, so a report never
silently drops a model or a column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serveprof.errors import ServeprofError

# The writers' column lists: the files are read with the contract they were written by.
from serveprof.measure.result_files import (
    COLDSTART_ADDED,
    COLDSTART_CORE,
    SUMMARY_ADDED,
    SUMMARY_CORE,
    read_json,
    read_latencies,
)

DURATION_COLUMNS = ("batch_size", "duration")
NUMERIC_SUMMARY = (
    "count", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
    "throughput_per_s", "first_init_ms", "first_aot_ms", "requests_target", "cpu_util_pct",
    "rss_peak_mb", "rss_mean_mb", "gpu_util_pct", "gpu_mem_mb", "foreign_cpu_pct", "steal_pct", "attempts",
    "server_count", "server_mean_ms", "server_p50_ms", "server_p99_ms",
)  # fmt: skip
NUMERIC_COLDSTART = ("load_ms", "first_infer_ms", "server_load_ms", "warmup_ms", "warmup_records", "foreign_cpu_pct",
                     "steal_pct", "attempts")  # fmt: skip


def _missing(path: Path, model: str) -> ServeprofError:
    return ServeprofError(
        f"result file {path} does not exist",
        f"run the workflow for model {model!r} (snakemake --cores 1 {path.parent}/summary.csv),"
        " check --results, or leave the model out of --models",
    )


def _read_csv(path: Path, model: str, columns: Iterable[str]) -> pd.DataFrame:
    if not path.is_file():
        raise _missing(path, model)
    try:
        # Result CSVs put ", " between fields (the workload's own format).
        frame = pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ServeprofError(
            f"{path} is not a readable CSV file ({error})", f"rerun the aggregation for model {model!r}"
        ) from None
    absent = [column for column in columns if column not in frame.columns]
    if absent:
        raise ServeprofError(
            f"{path} lacks the column(s) {', '.join(absent)} (it has {', '.join(map(str, frame.columns))})",
            f"rerun `serveprof aggregate` for model {model!r}; docs/ARCHITECTURE.md lists the columns",
        )
    return frame


def _with_added(frame: pd.DataFrame, added: Iterable[str]) -> pd.DataFrame:
    """Columns later versions added, empty in files written before them (runs kept from then)."""
    for column in added:
        if column not in frame.columns:
            frame[column] = None
    return frame


def _numeric(frame: pd.DataFrame, columns: Iterable[str], path: Path) -> pd.DataFrame:
    for column in columns:
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column].notna() & converted.isna()
        if bad.any():
            raise ServeprofError(
                f"{path}: column {column} holds non-numbers ({frame.loc[bad, column].iloc[0]!r})",
                "rerun the aggregation that wrote it; do not edit result files by hand",
            )
        frame[column] = converted.astype(float)
    return frame


def _stacked(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def parse_flag(value) -> bool:
    """A boolean cell: True/False, true/false, 1/0, yes/no, or empty (False)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def parse_percentile_list(value) -> tuple[str, ...]:
    """A list cell such as ``p90;p99``, ``["p90", "p99"]``, ``['p90']`` or empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    return tuple(part for part in re.split(r"[\s;,|\[\]'\"]+", str(value)) if part)


def load_summary(results_dir: Path, models: Iterable[str]) -> pd.DataFrame:
    """Every model's summary.csv in one frame, sorted by model order then batch size."""
    frames = []
    for model in models:
        path = Path(results_dir) / model / "summary.csv"
        frame = _numeric(_with_added(_read_csv(path, model, SUMMARY_CORE), SUMMARY_ADDED), NUMERIC_SUMMARY, path)
        frame["model"] = frame["model"].astype(str)
        if not (frame["model"] == model).all():
            raise ServeprofError(
                f"{path} holds rows for {sorted(set(frame['model']) - {model})}, not only for {model!r}",
                "each model folder must hold its own summary; rerun the aggregation for it",
            )
        if frame.empty:
            if _fits_nowhere(path.parent):
                continue  # on a device whose memory it fits in at no batch size: the report says so
            raise ServeprofError(f"{path} has no rows", f"rerun the measurements for model {model!r}")
        for column in ("truncated", "disturbed"):
            try:
                frame[column] = frame[column].map(parse_flag)
            except ValueError as error:
                raise ServeprofError(f"{path}: column {column}: {error}", f"write {column} as true or false") from None
        frame["low_sample_percentiles"] = frame["low_sample_percentiles"].map(parse_percentile_list)
        frame["batch_size"] = frame["batch_size"].astype(int)
        frames.append(frame.sort_values("batch_size"))
    return _stacked(frames, [*SUMMARY_CORE, *SUMMARY_ADDED])


def _fits_nowhere(folder: Path) -> bool:
    """Whether provenance says every batch size of this model folder did not fit in its device's memory."""
    try:
        return bool(json.loads((folder / "provenance.json").read_text()).get("does_not_fit"))
    except (OSError, ValueError, AttributeError):
        return False


def load_coldstart(results_dir: Path, models: Iterable[str]) -> pd.DataFrame:
    frames = []
    for model in models:
        path = Path(results_dir) / model / "coldstart.csv"
        frame = _with_added(_read_csv(path, model, COLDSTART_CORE), COLDSTART_ADDED)
        frame = _numeric(frame, NUMERIC_COLDSTART, path)
        frame["disturbed"] = frame["disturbed"].map(parse_flag)
        if len(frame) != 1:
            raise ServeprofError(
                f"{path} has {len(frame)} rows, expected one", f"rerun the cold start of model {model!r}"
            )
        frame["model"] = model
        frames.append(frame)
    return _stacked(frames, [*COLDSTART_CORE, *COLDSTART_ADDED])


def load_durations(results_dir: Path, models: Iterable[str]) -> pd.DataFrame:
    """The workload's ``<model>.csv`` files as one frame: model, batch_size, duration (mean ms)."""
    frames = []
    for model in models:
        path = Path(results_dir) / model / f"{model}.csv"
        frame = _numeric(_read_csv(path, model, DURATION_COLUMNS), DURATION_COLUMNS, path)
        frame["batch_size"] = frame["batch_size"].astype(int)
        frame.insert(0, "model", model)
        frames.append(frame.sort_values("batch_size"))
    return _stacked(frames, ["model", *DURATION_COLUMNS])


def load_provenance(results_dir: Path, models: Iterable[str]) -> dict[str, dict]:
    provenance = {}
    for model in models:
        path = Path(results_dir) / model / "provenance.json"
        if not path.is_file():
            raise _missing(path, model)
        provenance[model] = _read_json(path, "provenance file", f"rerun the aggregation for model {model!r}")
    return provenance


def load_latencies(results_dir: Path, model: str, batch_sizes: Iterable[int]) -> dict[int, np.ndarray]:
    """The raw per-request latencies (ms) of one model, per batch size."""
    latencies = {}
    for batch in batch_sizes:
        path = Path(results_dir) / model / f"{model}-b{batch}.csv"
        if not path.is_file():
            raise _missing(path, model)
        try:
            values = np.asarray(read_latencies(path), dtype=float)
        except ValueError as error:
            raise ServeprofError(
                f"{path} is not one number per line ({error})", f"rerun the measurement of {model!r} at batch {batch}"
            ) from None
        if values.size == 0:
            raise ServeprofError(f"{path} holds no latencies", f"rerun the measurement of {model!r} at batch {batch}")
        latencies[int(batch)] = values
    return latencies


def _read_json(path: Path, what: str, fix: str) -> dict:
    data = read_json(path, what)
    if not isinstance(data, dict):
        raise ServeprofError(f"{path} holds a {type(data).__name__}, not a JSON object", fix)
    return data


def load_statuses(acquired_dir: Path, models: Iterable[str]) -> dict[str, dict]:
    """Each model's acquisition status (``data/model/acquired/<model>.json``)."""
    statuses = {}
    for model in models:
        path = Path(acquired_dir) / f"{model}.json"
        fix = f"run `snakemake --cores 1 {path}` (or `serveprof acquire --model {model} ...`), or check --acquired-dir"
        if not path.is_file():
            raise ServeprofError(f"no acquisition status for model {model!r}: {path} does not exist", fix)
        status = _read_json(path, "acquisition status", fix)
        if status.get("status") not in ("ok", "unavailable"):
            raise ServeprofError(f"{path}: status is {status.get('status')!r}, expected 'ok' or 'unavailable'", fix)
        statuses[model] = status
    return statuses


@dataclass
class Run:
    """Everything the tables read, for the models that were profiled."""

    statuses: dict[str, dict]
    profiled: list[str]
    summary: pd.DataFrame
    coldstart: pd.DataFrame
    durations: pd.DataFrame
    provenance: dict[str, dict]
    acquired_dir: Path = Path("data/model/acquired")  # where the statuses were read (named in fixes)

    @property
    def not_profiled(self) -> list[str]:
        return [model for model, status in self.statuses.items() if status["status"] != "ok"]


def load_run(results_dir: Path, acquired_dir: Path, models: Iterable[str]) -> Run:
    """A run's results: models whose status is ``unavailable`` are listed, not read."""
    statuses = load_statuses(acquired_dir, models)
    profiled = [model for model, status in statuses.items() if status["status"] == "ok"]
    return Run(
        statuses=statuses,
        profiled=profiled,
        summary=load_summary(results_dir, profiled),
        coldstart=load_coldstart(results_dir, profiled),
        durations=load_durations(results_dir, profiled),
        provenance=load_provenance(results_dir, profiled),
        acquired_dir=Path(acquired_dir),
    )
