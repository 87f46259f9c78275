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
DISTURBED = "§"
DISTURBED_NOTE = (
    f"{DISTURBED} measured while other processes used the machine (beyond measure.max_foreign_cpu_pct or"
    " measure.max_steal_pct), and still so after the retries (measure.retry_disturbed): read these numbers with care."
)
LOW_SAMPLE_NOTE = f"{LOW_SAMPLE} too few requests to trust this tail percentile (fewer than the minimum sample count in docs/measurement.md)."
TRUNCATED_NOTE = (
    f"{TRUNCATED} series cut short by the time cap (measure.max_seconds): fewer requests were timed than the target."
)


def _model_type(run: Run, model: str) -> str:
    return str(run.statuses[model].get("type") or MISSING)


def _seconds(ms) -> float:
    return float(ms) / 1000.0


def _disturbed_reasons(rows: pd.DataFrame) -> list[str]:
    """The note naming the disturbed rows' reasons, when there are any."""
    return [DISTURBED_NOTE] if rows["disturbed"].any() else []


def coldstart_table(run: Run) -> Table:
    rows, records = [], []
    for model in run.profiled:
        cold = run.coldstart.set_index("model").loc[model]
        load_s, first_s = _seconds(cold["load_ms"]), _seconds(cold["first_infer_ms"])
        # The server's own split of the load (server.monitoring): the SavedModel load and the warm-up replay.
        saved_model_s, warmup_s = _seconds(cold["server_load_ms"]), _seconds(cold["warmup_ms"])
        warmup_records = cold["warmup_records"]
        load_text = significant(load_s) + (DISTURBED if cold["disturbed"] else "")
        rows.append([model, _model_type(run, model), load_text, significant(saved_model_s), significant(warmup_s),
                     integer(warmup_records), significant(first_s)])  # fmt: skip
        records.append({
            "model": model, "type": _model_type(run, model), "load_s": load_s, "first_infer_s": first_s,
            "saved_model_load_s": saved_model_s, "warmup_s": warmup_s, "warmup_records": warmup_records,
            "disturbed": bool(cold["disturbed"]), "foreign_cpu_pct": cold["foreign_cpu_pct"],
            "attempts": cold["attempts"], "disturbance_reasons": cold["disturbance_reasons"],
        })  # fmt: skip
    columns = ["model", "type", "load_s", "first_infer_s", "saved_model_load_s", "warmup_s", "warmup_records",
               "disturbed", "foreign_cpu_pct", "attempts", "disturbance_reasons"]  # fmt: skip
    notes = [
        "load time: server start until the model is AVAILABLE; of which the server itself reports the SavedModel"
        " load into a Session and the replay of the model's warm-up records (the rest is the process's start,"
        " TensorFlow's import among it); first infer: the first batch-1 request after AVAILABLE."
    ]
    return Table(
        name="coldstart",
        title="Cold start",
        header=[
            "model",
            "type",
            "load time (s)",
            "SavedModel load (s)",
            "warm-up (s)",
            "warm-up records",
            "first infer (s)",
        ],  # fmt: skip
        rows=rows,
        numeric=[False, False, True, True, True, True, True],
        data=pd.DataFrame(records, columns=columns),
        notes=notes + _disturbed_reasons(run.coldstart[run.coldstart["model"].isin(run.profiled)]),
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
                _batch_cell(row),
                significant(row["first_init_ms"]),
                significant(row["first_aot_ms"]),
                significant(row["duration"]),
                significant(row["throughput_per_s"]),
            ])  # fmt: skip
    columns = ["model", "batch_size", "first_init_ms", "first_aot_ms", "duration", "throughput_per_s", "disturbed"]
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
        ]
        + _disturbed_reasons(frame),
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


def _batch_cell(row: pd.Series) -> str:
    """The batch size, marked when its series stayed disturbed."""
    return str(row["batch_size"]) + (DISTURBED if row["disturbed"] else "")


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
                _batch_cell(row),
                requests,
                _marked(row, "p50_ms", "p50"),
                _marked(row, "p90_ms", "p90"),
                _marked(row, "p99_ms", "p99"),
                significant(row["std_ms"]),
            ])  # fmt: skip
    data = summary[
        ["model", "batch_size", "count", "requests_target", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "std_ms",
         "min_ms", "max_ms", "truncated", "truncated_reason", "low_sample_percentiles", "disturbed", "foreign_cpu_pct",
         "steal_pct", "attempts", "disturbance_reasons"]
    ].copy()  # fmt: skip
    data["low_sample_percentiles"] = data["low_sample_percentiles"].map(";".join)
    notes = []
    if summary["low_sample_percentiles"].map(bool).any():
        notes.append(LOW_SAMPLE_NOTE)
    if summary["truncated"].any():
        notes.append(TRUNCATED_NOTE + " The reason per row is in tables/percentiles.csv.")
    if summary["disturbed"].any():
        notes.append(DISTURBED_NOTE + " Who used it: tables/percentiles.csv (disturbance_reasons).")
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


def server_latency_table(run: Run) -> Table:
    """The client's latency beside the server's own, so the client's and the transport's share shows."""
    summary = run.summary
    share = 100.0 * (1.0 - summary["server_mean_ms"] / summary["mean_ms"])
    rows = []
    for model, group in summary.assign(share=share).groupby("model", sort=False):
        for position, (_, row) in enumerate(group.iterrows()):
            rows.append([
                model if position == 0 else "",
                _batch_cell(row),
                significant(row["mean_ms"]),
                significant(row["server_mean_ms"]),
                significant(row["share"], 2),
                significant(row["p50_ms"]),
                significant(row["server_p50_ms"]),
                significant(row["p99_ms"]),
                significant(row["server_p99_ms"]),
            ])  # fmt: skip
    data = summary[["model", "batch_size", "count", "mean_ms", "p50_ms", "p99_ms", "server_count", "server_mean_ms",
                    "server_p50_ms", "server_p99_ms", "serialization"]].copy()  # fmt: skip
    data.insert(8, "client_share_pct", share)
    notes = [
        "server: TF Serving's own request latency (:tensorflow:serving:request_latency, from a request's arrival in"
        " the server to its answer) over the same timed requests, scraped from its Prometheus page just before and"
        " after them; its mean is exact, its p50 and p99 are interpolated within histogram buckets whose bounds"
        " are 1.8× apart. client + transport: 1 − server mean / client mean, what the client, the loopback and the"
        " framing added. Empty where the server served no metrics (server.monitoring off, an external server)."
    ]
    return Table(
        name="server_latency",
        title="Client and server latency",
        header=[
            "model",
            "batch size",
            "client mean (ms)",
            "server mean (ms)",
            "client + transport (%)",
            "client p50 (ms)",
            "server p50 (ms)",
            "client p99 (ms)",
            "server p99 (ms)",
        ],  # fmt: skip
        rows=rows,
        numeric=[False] + [True] * 8,
        data=data,
        notes=notes + _disturbed_reasons(summary),
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
    return [
        coldstart_table(run),
        duration_table(run),
        compact_table(run),
        percentile_table(run),
        server_latency_table(run),
        resource_table(run),
    ]
