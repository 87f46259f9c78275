"""The report's tables, built from a loaded run.

The first three follow the workload's own layout (cold start; duration and throughput
per batch size; one compact row pair per model). Each table carries display cells for
markdown and a full-precision frame for ``reports/tables/<name>.csv``.
"""

from __future__ import annotations

import pandas as pd

from serveprof.report.markdown import Table
from serveprof.report.numbers import MISSING, integer, significant
from serveprof.report.results import Run

LOW_SAMPLE = "†"
TRUNCATED = "‡"
LOW_SAMPLE_NOTE = f"{LOW_SAMPLE} too few requests to trust this tail percentile (fewer than the minimum sample count in docs/measurement.md)."
TRUNCATED_NOTE = (
    f"{TRUNCATED} series cut short by the time cap (measure.max_seconds): fewer requests were timed than the target."
)


def _model_type(run: Run, model: str) -> str:
    return str(run.statuses[model].get("type") or MISSING)


def _seconds(ms) -> float:
    return float(ms) / 1000.0


def coldstart_table(run: Run) -> Table:
    rows, records = [], []
    for model in run.profiled:
        cold = run.coldstart.set_index("model").loc[model]
        load_s, first_s = _seconds(cold["load_ms"]), _seconds(cold["first_infer_ms"])
        rows.append([model, _model_type(run, model), significant(load_s), significant(first_s)])
        records.append({"model": model, "type": _model_type(run, model), "load_s": load_s, "first_infer_s": first_s})
    return Table(
        name="coldstart",
        title="Cold start",
        header=["model", "type", "load time (s)", "first infer (s)"],
        rows=rows,
        numeric=[False, False, True, True],
        data=pd.DataFrame(records, columns=["model", "type", "load_s", "first_infer_s"]),
        notes=[
            "load time: server start until the model is AVAILABLE; first infer: the first batch-1 request after that."
        ],
    )


def _joined(run: Run) -> pd.DataFrame:
    """Summary rows with the workload's duration (``<model>.csv``) beside them."""
    return run.summary.merge(run.durations, on=["model", "batch_size"], how="left", validate="one_to_one")


def duration_table(run: Run) -> Table:
    rows = []
    frame = _joined(run)
    for model, group in frame.groupby("model", sort=False):
        for position, (_, row) in enumerate(group.iterrows()):
            rows.append([
                model if position == 0 else "",
                str(row["batch_size"]),
                significant(row["first_init_ms"]),
                significant(row["first_aot_ms"]),
                significant(row["duration"]),
                significant(row["throughput_per_s"]),
            ])  # fmt: skip
    columns = ["model", "batch_size", "first_init_ms", "first_aot_ms", "duration", "throughput_per_s"]
    return Table(
        name="durations",
        title="Duration and throughput per batch size",
        header=["model", "batch size", "first init (ms)", "first AoT (ms)", "duration (ms)", "throughput (items/s)"],
        rows=rows,
        numeric=[False, True, True, True, True, True],
        data=frame[columns].rename(columns={"duration": "duration_ms"}),
        notes=[
            "first init: the first request at this batch size on a fresh model; first AoT: the second;"
            " duration: mean of the timed requests; throughput: batch size × 1000 / duration."
        ],
    )


def compact_table(run: Run) -> Table:
    frame = _joined(run)
    batches = sorted(frame["batch_size"].unique())
    coldstart = run.coldstart.set_index("model")
    header = ["model", "type", "load (s)", "first (s)", "unit"] + [f"b{batch}/t" for batch in batches]
    rows, records = [], []
    for model, group in frame.groupby("model", sort=False):
        by_batch = group.set_index("batch_size")
        times = [significant(by_batch.at[b, "duration"]) if b in by_batch.index else MISSING for b in batches]
        rates = [significant(by_batch.at[b, "throughput_per_s"]) if b in by_batch.index else MISSING for b in batches]
        load_s, first_s = _seconds(coldstart.at[model, "load_ms"]), _seconds(coldstart.at[model, "first_infer_ms"])
        rows.append([model, _model_type(run, model), significant(load_s), significant(first_s), "ms", *times])
        rows.append(["", "", "", "", "items/s", *rates])
        for batch in batches:
            if batch in by_batch.index:
                records.append({
                    "model": model, "type": _model_type(run, model), "load_s": load_s, "first_infer_s": first_s,
                    "batch_size": batch, "duration_ms": by_batch.at[batch, "duration"],
                    "throughput_per_s": by_batch.at[batch, "throughput_per_s"],
                })  # fmt: skip
    return Table(
        name="compact",
        title="All batch sizes at a glance",
        header=header,
        rows=rows,
        numeric=[False, False, True, True, False] + [True] * len(batches),
        data=pd.DataFrame(records),
        notes=[
            "Per model, the first row is the mean latency (ms), the second the throughput (items/s); bN/t is batch size N."
        ],
    )


def _marked(row: pd.Series, column: str, percentile: str) -> str:
    text = significant(row[column])
    return text + LOW_SAMPLE if percentile in row["low_sample_percentiles"] else text


def percentile_table(run: Run) -> Table:
    rows = []
    summary = run.summary
    for model, group in summary.groupby("model", sort=False):
        for position, (_, row) in enumerate(group.iterrows()):
            requests = integer(row["count"])
            if row["truncated"]:
                requests = f"{requests} of {integer(row['requests_target'])}{TRUNCATED}"
            rows.append([
                model if position == 0 else "",
                str(row["batch_size"]),
                requests,
                _marked(row, "p50_ms", "p50"),
                _marked(row, "p90_ms", "p90"),
                _marked(row, "p99_ms", "p99"),
                significant(row["std_ms"]),
            ])  # fmt: skip
    data = summary[
        ["model", "batch_size", "count", "requests_target", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "std_ms",
         "min_ms", "max_ms", "truncated", "truncated_reason", "low_sample_percentiles"]
    ].copy()  # fmt: skip
    data["low_sample_percentiles"] = data["low_sample_percentiles"].map(";".join)
    notes = []
    if summary["low_sample_percentiles"].map(bool).any():
        notes.append(LOW_SAMPLE_NOTE)
    if summary["truncated"].any():
        notes.append(TRUNCATED_NOTE + " The reason per row is in tables/percentiles.csv.")
    return Table(
        name="percentiles",
        title="Latency percentiles",
        header=["model", "batch size", "requests", "p50 (ms)", "p90 (ms)", "p99 (ms)", "std (ms)"],
        rows=rows,
        numeric=[False, True, True, True, True, True, True],
        data=data,
        notes=notes,
    )


def resource_table(run: Run) -> Table:
    summary = run.summary
    has_gpu = not summary[["gpu_util_pct", "gpu_mem_mb"]].isna().all().all()
    # Resources are sampled in MiB (2^20 bytes); the summary's column names say "mb" for brevity.
    header = ["model", "batch size", "CPU (% of one core)", "RSS peak (MiB)", "RSS mean (MiB)"]
    columns = ["model", "batch_size", "cpu_util_pct", "rss_peak_mb", "rss_mean_mb"]
    if has_gpu:
        header += ["GPU (%)", "GPU memory (MiB)"]
        columns += ["gpu_util_pct", "gpu_mem_mb"]
    rows = []
    for model, group in summary.groupby("model", sort=False):
        for position, (_, row) in enumerate(group.iterrows()):
            cells = [significant(row[column]) for column in columns[2:]]
            rows.append([model if position == 0 else "", str(row["batch_size"]), *cells])
    return Table(
        name="resources",
        title="Server resources",
        header=header,
        rows=rows,
        numeric=[False] + [True] * (len(header) - 1),
        data=summary[columns].copy(),
        notes=[
            "Sampled from the server's processes while the timed requests ran. CPU is in percent of one core"
            " (100 % = one core busy, 200 % = two); RSS and GPU memory in MiB (the CSV columns named *_mb hold MiB too)."
        ],
    )


def not_profiled_table(run: Run) -> Table:
    records = [
        {
            "model": model,
            "reason": run.statuses[model].get("reason") or "not given",
            "fix": run.statuses[model].get("fix") or "not given",
        }
        for model in run.not_profiled
    ]
    return Table(
        name="not_profiled",
        title="Not profiled",
        header=["model", "reason", "fix"],
        rows=[[record["model"], record["reason"], record["fix"]] for record in records],
        numeric=[False, False, False],
        data=pd.DataFrame(records, columns=["model", "reason", "fix"]),
    )


def result_tables(run: Run) -> list[Table]:
    """The measurement tables in report order; with nothing profiled, each has no rows.

    The same files every time, so the workflow can name each one as an output.
    """
    return [coldstart_table(run), duration_table(run), compact_table(run), percentile_table(run), resource_table(run)]
