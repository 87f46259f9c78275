"""Models ranked per device, by latency at each batch size and by peak memory, and where the order flips.

Auptimizer's point is that the ranking holds on CPU-bound devices; this shows where it
does not. A model's latency interval is the 95 % t-interval of its repeats' means
(provenance.json's ``repeat_cells``, measure.repeats > 1); two models whose intervals
overlap are *within noise*, so a flip between them is no surprise. Without repeats there
is no interval and no pair is called within noise. A cell that does not fit in its
device's memory ranks after every cell that does, for both metrics.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from serveprof.report.results import load_summary

METRICS = {"latency": ("mean_ms", "ms"), "memory": ("rss_peak_mb", "MiB")}
COLUMNS = ["device", "metric", "batch_size", "rank", "model", "value", "unit", "low", "high", "fits", "within_noise_of"]
FLIP_COLUMNS = ["metric", "batch_size", "model_a", "model_b", "a_first_on", "b_first_on", "within_noise"]


def _provenance(folder: Path, model: str) -> dict:
    try:
        return json.loads((folder / model / "provenance.json").read_text())
    except (OSError, ValueError):
        return {}


def device_cells(device: str, folder: Path, models: list[str]) -> list[dict]:
    """One record per (model, batch size) of one device: latency and peak memory, intervals, fits."""
    found = [model for model in models if (folder / model / "summary.csv").is_file()]
    summary = load_summary(folder, found)
    records = []
    for model in found:
        provenance = _provenance(folder, model)
        intervals = {cell["batch_size"]: cell for cell in provenance.get("repeat_cells") or []}
        for row in summary[summary["model"] == model].itertuples():
            cell = intervals.get(row.batch_size, {})
            records.append({"device": device, "model": model, "batch_size": int(row.batch_size), "fits": True,
                            "mean_ms": row.mean_ms, "rss_peak_mb": row.rss_peak_mb,
                            "low": cell.get("ci_low_ms"), "high": cell.get("ci_high_ms")})  # fmt: skip
        for unfit in provenance.get("does_not_fit") or []:
            records.append({"device": device, "model": model, "batch_size": int(unfit["batch_size"]), "fits": False,
                            "mean_ms": None, "rss_peak_mb": unfit.get("peak_mb"), "low": None, "high": None})  # fmt: skip
    return records


def _overlap(a: Mapping, b: Mapping) -> bool:
    if None in (a["low"], a["high"], b["low"], b["high"]):
        return False
    return a["low"] <= b["high"] and b["low"] <= a["high"]


def rank(devices: Mapping[str, Path], models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the ranking, one row per device, metric, batch size and model; the flips between devices)."""
    cells = [record for device, folder in devices.items() for record in device_cells(device, folder, models)]
    rows = []
    for metric, (column, unit) in METRICS.items():
        groups: dict[tuple[str, int], list[dict]] = {}
        for cell in cells:
            groups.setdefault((cell["device"], cell["batch_size"]), []).append(cell)
        for (device, batch), group in sorted(
            groups.items(), key=lambda item: (list(devices).index(item[0][0]), item[0][1])
        ):
            ordered = sorted(group, key=lambda c: (not c["fits"], c[column] if c[column] is not None else float("inf")))
            for place, cell in enumerate(ordered, start=1):
                noisy = [
                    other["model"]
                    for other in ordered
                    if other is not cell and metric == "latency" and _overlap(cell, other)
                ]
                rows.append({"device": device, "metric": metric, "batch_size": batch, "rank": place,
                             "model": cell["model"], "value": cell[column], "unit": unit,
                             "low": cell["low"] if metric == "latency" else None,
                             "high": cell["high"] if metric == "latency" else None,
                             "fits": cell["fits"], "within_noise_of": ";".join(noisy)})  # fmt: skip
    ranking = pd.DataFrame(rows, columns=COLUMNS)
    return ranking, flips(ranking)


def flips(ranking: pd.DataFrame) -> pd.DataFrame:
    """Each pair of models whose order differs between two devices, at one batch size and metric."""
    rows = []
    for (metric, batch), group in ranking.groupby(["metric", "batch_size"], sort=True):
        places = {(row.device, row.model): row for row in group.itertuples()}
        devices = list(dict.fromkeys(group["device"]))
        for a, b in itertools.combinations(sorted(set(group["model"])), 2):
            a_first, b_first, noisy = [], [], False
            for device in devices:
                if (device, a) not in places or (device, b) not in places:
                    continue
                row_a, row_b = places[(device, a)], places[(device, b)]
                (a_first if row_a.rank < row_b.rank else b_first).append(device)
                noisy = noisy or b in row_a.within_noise_of.split(";")
            if a_first and b_first:
                rows.append({"metric": metric, "batch_size": int(batch), "model_a": a, "model_b": b,
                             "a_first_on": ";".join(a_first), "b_first_on": ";".join(b_first),
                             "within_noise": noisy})  # fmt: skip
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


def _value(row) -> str:
    if not row.fits:
        return "does not fit"
    if pd.isna(row.value):
        return "–"
    interval = f" [{row.low:.4g}–{row.high:.4g}]" if pd.notna(row.low) and pd.notna(row.high) else ""
    return f"{row.value:.4g} {row.unit}{interval}"


def ranking_markdown(ranking: pd.DataFrame, flipped: pd.DataFrame) -> str:
    parts = ["# Models ranked per device\n",
             "1 is the fastest (latency: mean ms, with the 95 % interval of the repeats' means) or the smallest "
             "(memory: the server's peak RSS). ≈ marks a model within noise of the one above it (their intervals "
             "overlap).\n"]  # fmt: skip
    for metric in METRICS:
        part = ranking[ranking["metric"] == metric]
        if part.empty:
            continue
        devices = list(dict.fromkeys(part["device"]))
        header = "| batch | " + " | ".join(devices) + " |"
        lines = [f"## By {metric}\n", header, "|" + "---|" * (len(devices) + 1)]
        for batch, rows in part.groupby("batch_size", sort=True):
            cells = []
            for device in devices:
                ordered = rows[rows["device"] == device].sort_values("rank")
                names, previous = [], None
                for row in ordered.itertuples():
                    near = previous is not None and previous in row.within_noise_of.split(";")
                    names.append(f"{'≈ ' if near else ''}{row.rank}. {row.model} ({_value(row)})")
                    previous = row.model
                cells.append("<br>".join(names) or "–")
            lines.append(f"| {batch} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    if flipped.empty:
        parts.append("## Where the ranking changes\n\nThe order of every pair of models is the same on every device.\n")
    else:
        lines = ["## Where the ranking changes\n", "| metric | batch | A, B | A before B on | B before A on | within noise |",
                 "|---|---|---|---|---|---|"]  # fmt: skip
        for row in flipped.itertuples():
            lines.append(f"| {row.metric} | {row.batch_size} | {row.model_a}, {row.model_b} | {row.a_first_on} "
                         f"| {row.b_first_on} | {'yes: no surprise' if row.within_noise else 'no'} |")  # fmt: skip
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
