"""The variants section: throughput per model and variant, speed-up against the accuracy change, what was not built.

Read from result files only: each variant's ``summary.csv`` (fp32's is the reference
layout's), its ``accuracy.json``, and its export status. Tables, as the published
precision tables lay them out: one per batch size, rows = models, columns = variants.
The resources figure puts each (model, variant) on a line of its own: memory and CPU per
batch size, and GPU utilisation and memory when the runs sampled a GPU.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from serveprof.atomic import atomic_write_text
from serveprof.report.markdown import markdown_table
from serveprof.report.numbers import significant
from serveprof.variants.catalog import REFERENCE


def summary_path(results: Path, model: str, variant: str) -> Path:
    if variant == REFERENCE:
        return results / "profiling" / model / "summary.csv"
    return results / "variants" / variant / "profiling" / model / "summary.csv"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def throughput(results: Path, variants: Mapping[str, list[str]]) -> pd.DataFrame:
    """model, variant, batch_size, mean_ms, throughput_per_s, speedup (against fp32 at the same batch)."""
    rows = []
    for model, name, summary in _summaries(results, variants):
        for _, row in summary.iterrows():
            rows.append(
                {
                    "model": model,
                    "variant": name,
                    "batch_size": int(row["batch_size"]),
                    "mean_ms": float(row["mean_ms"]),
                    "throughput_per_s": float(row["throughput_per_s"]),
                }
            )
    frame = pd.DataFrame(rows, columns=["model", "variant", "batch_size", "mean_ms", "throughput_per_s"])
    reference = frame[frame["variant"] == REFERENCE].set_index(["model", "batch_size"])["throughput_per_s"]
    frame["speedup"] = [
        row.throughput_per_s / reference[(row.model, row.batch_size)]
        if (row.model, row.batch_size) in reference.index
        else float("nan")
        for row in frame.itertuples()
    ]
    return frame


def accuracy(results: Path, statuses: Path, variants: Mapping[str, list[str]], speed: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant other than fp32): status, median speed-up, agreement and output differences."""
    rows = []
    for model, names in variants.items():
        for name in names:
            if name == REFERENCE:
                continue
            status = _read_json(statuses / model / f"{name}.json") or {}
            found = _read_json(results / "variants" / name / "profiling" / model / "accuracy.json") or {}
            speedups = speed[(speed["model"] == model) & (speed["variant"] == name)]["speedup"]
            outputs = found.get("outputs", {})
            classification = found.get("classification", {})
            detection = found.get("detection", {})
            rows.append(
                {
                    "model": model,
                    "variant": name,
                    "status": status.get("status", "missing"),
                    "reason": status.get("reason"),
                    "fix": status.get("fix"),
                    "median_speedup": float(speedups.median()) if len(speedups) else float("nan"),
                    "top1_agreement": classification.get("top1_agreement"),
                    "top5_agreement": classification.get("top5_agreement"),
                    "mean_iou": detection.get("mean_iou"),
                    "mean_abs_score_diff": detection.get("mean_abs_score_diff"),
                    "max_abs_diff": max((o["max_abs_diff"] for o in outputs.values()), default=None),
                    "mean_abs_diff": max((o["mean_abs_diff"] for o in outputs.values()), default=None),
                    "weights_note": found.get("weights_note"),
                }
            )
    return pd.DataFrame(rows)


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return significant(value, digits)


def markdown(speed: pd.DataFrame, accuracy_rows: pd.DataFrame, variants: Mapping[str, list[str]]) -> str:
    order = [REFERENCE, *dict.fromkeys(n for names in variants.values() for n in names if n != REFERENCE)]
    parts = [
        "# Variants\n\n",
        "Throughput in items per second (speed-up against fp32 in brackets), one table per batch size.\n",
    ]
    for batch in sorted(speed["batch_size"].unique()):
        rows = []
        for model in variants:
            cells = [model]
            for name in order:
                match = speed[(speed["model"] == model) & (speed["variant"] == name) & (speed["batch_size"] == batch)]
                if match.empty:
                    cells.append("–")
                    continue
                row = match.iloc[0]
                extra = "" if name == REFERENCE else f" ({_cell(row['speedup'])}×)"
                cells.append(_cell(row["throughput_per_s"]) + extra)
            rows.append(cells)
        parts.append(
            f"\n## Batch size {batch}\n\n" + markdown_table(["model", *order], rows, [False] + [True] * len(order))
        )
    if not accuracy_rows.empty:
        built = accuracy_rows[accuracy_rows["status"] == "ok"]
        header = [
            "model",
            "variant",
            "speed-up (median)",
            "top-1 agr.",
            "top-5 agr.",
            "mean IoU",
            "max |Δ|",
            "mean |Δ|",
        ]
        rows = [
            [
                row["model"],
                row["variant"],
                _cell(row["median_speedup"]) + "×",
                _cell(row["top1_agreement"]),
                _cell(row["top5_agreement"]),
                _cell(row["mean_iou"]),
                _cell(row["max_abs_diff"]),
                _cell(row["mean_abs_diff"]),
            ]
            for _, row in built.iterrows()
        ]
        parts.append(
            "\n## Speed-up against the accuracy change\n\n" + markdown_table(header, rows, [False, False] + [True] * 6)
        )
        notes = sorted({note for note in built["weights_note"] if isinstance(note, str)})
        parts += [f"\n{note}.\n" for note in notes]
        missing = accuracy_rows[accuracy_rows["status"] != "ok"]
        if not missing.empty:
            rows = [
                [row["model"], row["variant"], row["reason"] or "", row["fix"] or ""] for _, row in missing.iterrows()
            ]
            parts.append(
                "\n## Variants not profiled\n\n"
                + markdown_table(["model", "variant", "reason", "fix"], rows, [False] * 4)
            )
    return "".join(parts)


RESOURCE_COLUMNS = ("cpu_util_pct", "rss_peak_mb", "rss_mean_mb", "gpu_util_pct", "gpu_mem_mb")


def _ordered(names: list[str]) -> list[str]:
    return [REFERENCE, *[n for n in names if n != REFERENCE]]


def _summaries(results: Path, variants: Mapping[str, list[str]]):
    """``(model, variant, summary frame)`` for every measured variant, fp32 first; unmeasured ones are skipped."""
    for model, names in variants.items():
        for name in _ordered(names):
            path = summary_path(results, model, name)
            if path.is_file():
                yield model, name, pd.read_csv(path, skipinitialspace=True)


def resources(results: Path, variants: Mapping[str, list[str]]) -> pd.DataFrame:
    """Every measured variant's resource columns per batch size, as one series ``<model> <variant>``
    (the figures' ``model`` column); a column a summary lacks is empty."""
    frames = []
    for model, name, frame in _summaries(results, variants):
        for column in RESOURCE_COLUMNS:
            frame[column] = pd.to_numeric(frame[column], errors="coerce") if column in frame else float("nan")
        frame["model"] = f"{model} {name}"
        frames.append(frame[["model", "batch_size", *RESOURCE_COLUMNS]].sort_values("batch_size"))
    columns = ["model", "batch_size", *RESOURCE_COLUMNS]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def resources_figure(frame: pd.DataFrame, style):
    """The report's resources figure (memory, CPU, and GPU panels when sampled), one line per (model, variant)."""
    from serveprof.report.figures import build_resources_figure, new_figure
    from serveprof.report.style import model_looks

    if frame.empty:
        fig = new_figure(style)  # nothing measured yet: an empty figure, so the file exists
        fig.text(0.5, 0.5, "no variant measured", ha="center")
        return fig
    return build_resources_figure(frame, model_looks(frame["model"].unique(), style), style)


def write(results: Path, statuses: Path, variants: Mapping[str, list[str]], out: Path, style=None) -> dict[str, Path]:
    """variants.md, throughput.csv, accuracy.csv and, with a ``style``, the speed-up figure (speedup.<format>)
    and the resources figure (resources.<format>), each also as PNG, which the HTML report embeds."""
    speed = throughput(results, variants)
    rows = accuracy(results, statuses, variants, speed)
    out.mkdir(parents=True, exist_ok=True)
    written = {"throughput": out / "throughput.csv", "accuracy": out / "accuracy.csv", "report": out / "variants.md"}
    atomic_write_text(written["throughput"], speed.to_csv(index=False))
    atomic_write_text(written["accuracy"], rows.to_csv(index=False))
    atomic_write_text(written["report"], markdown(speed, rows, variants))
    if style is not None:
        style = dataclasses.replace(style, formats=tuple(dict.fromkeys((*style.formats, "png"))))
        for path in figure(rows, out / "speedup", style):
            written[f"figure {path.suffix[1:]}"] = path
        from serveprof.report.figures import save_figure

        for path in save_figure(resources_figure(resources(results, variants), style), out / "resources", style):
            written[f"resources {path.suffix[1:]}"] = path
    return written


def figure(rows: pd.DataFrame, stem: Path, style) -> list[Path]:
    """Speed-up (median over batch sizes) against the largest output difference from fp32, one point per variant."""
    from serveprof.report.figures import add_grid, new_figure, save_figure, styled

    @styled
    def build(style):
        fig = new_figure(style)
        ax = fig.add_subplot()
        built = rows[(rows["status"] == "ok") & rows["max_abs_diff"].notna()] if not rows.empty else rows
        for row in built.itertuples():
            # A difference of exactly 0 (a frozen graph) sits at the axis' floor.
            difference = max(float(row.max_abs_diff), 1e-9)
            ax.scatter(row.median_speedup, difference, s=30)
            ax.annotate(f"{row.model} {row.variant}", (row.median_speedup, difference), fontsize="small",
                        xytext=(4, 3), textcoords="offset points")  # fmt: skip
        ax.set_yscale("log")
        ax.margins(x=0.2, y=0.2)  # room for the labels
        ax.axvline(1.0, color="#888888", linewidth=0.8)
        ax.set_xlabel("speed-up against fp32 (median over batch sizes)")
        ax.set_ylabel("max |output − fp32 output|")
        ax.set_title("Speed-up against the accuracy change")
        add_grid(ax)
        return fig

    return save_figure(build(style), stem, style)
