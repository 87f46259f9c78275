"""What the load points say: the knee of each line, the best configuration under the SLO, and its file.

Read from the points' summaries only (``workload/load/<model>/summary.csv`` and the
points' JSON for the batching parameters), so a report never measures.

- **Knee**: on each scenario's line (its points in order of load), the point of
  highest *power*, throughput divided by mean latency (Kleinrock's operating point):
  beyond it, latency grows faster than throughput.
- **Best**: the point with the highest throughput whose p99 is within ``slo_p99_ms``
  (any point without an SLO) and that had no errors; unstable points may win, and the
  table says so. The best *batching* configuration is chosen the same way among the
  batching scenarios, and its BatchingParameters file is written as TF Serving reads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from serveprof.atomic import atomic_write_text
from serveprof.load.results import read_point
from serveprof.report.markdown import markdown_table
from serveprof.report.results import parse_flag
from serveprof.report.tables import DISTURBED_NOTE

BEST_COLUMNS = (
    "model",
    "choice",
    "scenario",
    "point",
    "batching",
    "throughput_per_s",
    "p50_ms",
    "p99_ms",
    "stable",
    "disturbed",
    "low_sample_percentiles",
    "parameters_file",
)


def ordered(rows: pd.DataFrame) -> pd.DataFrame:
    """One scenario's points in order of offered load."""
    level = rows["concurrency"].where(rows["mode"] == "closed", rows["target_rate_per_s"])
    return rows.assign(_level=level).sort_values("_level").drop(columns="_level")


def knee(rows: pd.DataFrame) -> int | None:
    """Index label of the scenario's point of highest throughput / mean latency (None: no usable point)."""
    power = rows["throughput_per_s"] / rows["mean_ms"]
    power = power[power.notna() & (rows["error_count"] == 0)]
    return power.idxmax() if len(power) else None


def within_slo(rows: pd.DataFrame, slo_p99_ms: float | None) -> pd.DataFrame:
    usable = rows[(rows["error_count"] == 0) & rows["p99_ms"].notna()]
    return usable if slo_p99_ms is None else usable[usable["p99_ms"] <= slo_p99_ms]


def best(rows: pd.DataFrame, slo_p99_ms: float | None) -> pd.Series | None:
    """The highest-throughput point within the SLO (ties: the lower p99)."""
    candidates = within_slo(rows, slo_p99_ms)
    if candidates.empty:
        return None
    return candidates.sort_values(["throughput_per_s", "p99_ms"], ascending=[False, True]).iloc[0]


def parameters_text(batching: Mapping | None, why: str) -> str:
    """A BatchingParameters file with a comment saying where it comes from (text format takes # comments)."""
    from serveprof.server.batching import batching_parameters_text

    header = f"# {why}\n"
    if batching is None:
        return header
    return header + batching_parameters_text(batching)


def _row(model: str, choice: str, point: pd.Series | None, parameters_file: str | None) -> dict:
    if point is None:
        return {"model": model, "choice": choice, "parameters_file": parameters_file}
    return {
        "model": model,
        "choice": choice,
        **{key: point[key] for key in BEST_COLUMNS if key in point.index and key not in ("model", "choice")},
        "parameters_file": parameters_file,
    }


def best_table(
    summaries: Mapping[str, pd.DataFrame], points_dir: Path, slo_p99_ms: float | None, out: Path
) -> pd.DataFrame:
    """Per model, the best point overall and the best batching configuration; writes each model's parameters file."""
    rows = []
    slo = f"p99 within {slo_p99_ms:g} ms" if slo_p99_ms is not None else "no SLO set (load.slo_p99_ms)"
    for model, summary in summaries.items():
        overall = best(summary, slo_p99_ms)
        batched = best(summary[summary["batching"] != "batching off"], slo_p99_ms)
        path = out / model / "batching_parameters.txt"
        if batched is not None:
            document = read_point(points_dir / model / batched["scenario"] / f"{batched['point']}.json")
            why = (
                f"serveprof: the best batching configuration for {model} at {slo}: {batched['scenario']}/"
                f"{batched['point']}, {batched['throughput_per_s']:.1f} items/s, p99 {batched['p99_ms']:.3f} ms"
            )
            text = parameters_text(document.get("batching"), why)
        else:
            text = parameters_text(None, f"serveprof: no batching configuration for {model} met {slo}")
        atomic_write_text(path, text)
        rows.append(_row(model, "best overall", overall, None))
        rows.append(_row(model, "best batching", batched, str(path) if batched is not None else None))
    return pd.DataFrame(rows, columns=list(BEST_COLUMNS))


def best_markdown(table: pd.DataFrame, slo_p99_ms: float | None) -> str:
    slo = f"p99 ≤ {slo_p99_ms:g} ms" if slo_p99_ms is not None else "no SLO set: the highest throughput without errors"
    lines = [f"# Best configuration under the SLO ({slo})", ""]
    shown = table.copy()
    for column in ("throughput_per_s", "p50_ms", "p99_ms"):
        shown[column] = shown[column].map(lambda value: "" if _missing(value) else f"{float(value):.3f}")
    shown = shown.astype(object).fillna("")  # float columns cannot hold "" as a fill value
    numeric = [column in ("throughput_per_s", "p50_ms", "p99_ms") for column in shown.columns]
    lines.append(markdown_table(list(shown.columns), shown.astype(str).values.tolist(), numeric))
    lines += [
        "",
        "A best batching configuration's file is TF Serving's text-format BatchingParameters: pass it as "
        "`--enable_batching --batching_parameters_file=<file>`, or set it as `server.batching`.",
    ]
    if "disturbed" in table and table["disturbed"].map(parse_flag).any():
        lines += ["", DISTURBED_NOTE.replace("§ measured", "A point marked disturbed was measured", 1)]
    return "\n".join(lines) + "\n"


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def summaries_of(paths: Sequence[Path]) -> dict[str, pd.DataFrame]:
    """Each model's summary.csv, keyed by model."""
    found = {}
    for path in paths:
        frame = pd.read_csv(path)
        if "disturbed" in frame:  # empty where a point has no disturbance record: not disturbed
            frame["disturbed"] = frame["disturbed"].map(parse_flag)
        if not frame.empty:
            found[str(frame["model"].iloc[0])] = frame
    return found
