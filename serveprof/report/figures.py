"""The report's figures, each built as a matplotlib Figure from result frames only.

Builders return the Figure without saving it, so tests can read the plotted data back
from the artists; ``save_figure`` writes it in every configured format. Every artist
that carries data has a gid (``"mean_ms:<model>"``, ``"ecdf:<batch>"``, ...) so a test
or a script can find it without relying on drawing order.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # never a display: figures are files

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from serveprof.atomic import atomic_write_bytes
from serveprof.report.numbers import significant
from serveprof.report.style import ModelLook, Style

OVERVIEW_KINDS = ("latency", "throughput", "coldstart", "resources")
PER_MODEL_KINDS = ("distribution",)
BAND_ALPHA = 0.18
# Percentile levels marked on the distribution figures.
LEVELS = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


def _styled(build):
    """Run a builder under the style's font size (text takes its size when created)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        style = kwargs.get("style") or next(arg for arg in args if isinstance(arg, Style))
        with matplotlib.rc_context({"font.size": style.font_size}):
            return build(*args, **kwargs)

    return wrapper


def _figure(style: Style, height_scale: float = 1.0, legend: list[str] | None = None) -> Figure:
    """A figure whose plot area keeps the configured size; a legend below adds height."""
    extra = 0.0
    if legend:
        rows = -(-len(legend) // _legend_columns(legend, style))
        extra = rows * style.font_size * 1.5 / 72 + 0.15
    return Figure(figsize=(style.width_in, style.height_in * height_scale + extra), dpi=style.dpi, layout="constrained")


def _plain_numbers(axis) -> None:
    """Tick labels as plain numbers (20, 50, 100), not powers of ten, on any scale."""
    formatter = FuncFormatter(lambda value, _: significant(value, 2) if value > 0 else "0")
    axis.set_major_formatter(formatter)
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def _value_axis(ax: Axes, log: bool, which: str = "y") -> None:
    """A latency or throughput axis; call after plotting, the ticks follow the data range."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    if log:
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
        low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
        decades = np.log10(high / low) if low > 0 else 3
        # Enough labelled ticks to read a value off a narrow range, few enough for a wide one.
        subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0) if decades < 2.5 else (1.0, 3.0) if decades < 4 else (1.0,)
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_minor_locator(LogLocator(base=10, subs=np.arange(1.0, 10.0)))
    _plain_numbers(axis)


def _batch_axis(ax: Axes, batches, style: Style) -> None:
    """Batch sizes as the ticks, log base 2 when configured (batch sizes double)."""
    if style.log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(batches))
    ax.set_xticklabels([str(batch) for batch in sorted(batches)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size (items per request)")


def _grid(ax: Axes) -> None:
    ax.grid(True, which="major", color="#d9d9d9", linewidth=0.7)
    ax.set_axisbelow(True)


def _legend_columns(labels: list[str], style: Style, width_in: float | None = None) -> int:
    """As many columns as fit the figure's width, at most four, so 8 models take two rows."""
    characters = (width_in or style.width_in) * 72 / (style.font_size * 0.62)
    longest = max((len(label) for label in labels), default=1) + 6
    return max(1, min(len(labels), 4, int(characters // longest)))


def _model_legend(fig: Figure, handles: list, style: Style) -> None:
    labels = [handle.get_label() for handle in handles]
    fig.legend(handles=handles, loc="outside lower center", ncols=_legend_columns(labels, style), frameon=False)


def _model_handle(model: str, look: ModelLook, **overrides) -> Line2D:
    settings = dict(color=look.colour, marker=look.marker, linestyle=look.linestyle, label=model)
    settings.update(overrides)
    return Line2D([], [], **settings)


def _legend_labels(summary: pd.DataFrame, extra: list[str]) -> list[str]:
    labels = [*summary["model"].unique(), *extra]
    return labels + ["open marker: cut short"] if _cut_short(summary).any() else labels


def _cut_short(rows: pd.DataFrame) -> pd.Series:
    return rows["truncated"].astype(bool) | rows["low_sample_percentiles"].map(bool)


def _mark_cut_short(ax: Axes, x, y, mask, look: ModelLook, gid: str) -> None:
    """Open markers over points whose series was cut short or has too few samples."""
    if mask.any():
        ax.plot(np.asarray(x)[mask], np.asarray(y)[mask], linestyle="none", marker=look.marker,
                markerfacecolor="white", markeredgecolor=look.colour, markersize=6, zorder=4, gid=gid)  # fmt: skip


def _cut_short_handle() -> Line2D:
    return Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#555555",
                  label="open marker: cut short")  # fmt: skip


def _by_model(summary: pd.DataFrame, looks: Mapping[str, ModelLook]):
    for model, rows in summary.groupby("model", sort=False):
        yield model, rows.sort_values("batch_size"), looks[model]


def _lines_per_model(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style, column: str,
                     ylabel: str, title: str, band: bool = False) -> Figure:  # fmt: skip
    """One line of ``column`` against batch size per model (gid ``<column>:<model>``)."""
    extra = ["band: p50 to p99"] if band else []
    fig = _figure(style, legend=_legend_labels(summary, extra))
    ax = fig.add_subplot()
    handles = []
    for model, rows, look in _by_model(summary, looks):
        batch = rows["batch_size"].to_numpy()
        if band:
            ax.fill_between(batch, rows["p50_ms"], rows["p99_ms"], color=look.colour, alpha=BAND_ALPHA, linewidth=0, gid=f"band:{model}")
        ax.plot(batch, rows[column], color=look.colour, marker=look.marker, linestyle=look.linestyle,
                linewidth=1.8, markersize=5, gid=f"{column}:{model}", label=model)  # fmt: skip
        _mark_cut_short(ax, batch, rows[column], _cut_short(rows).to_numpy(), look, f"cut:{model}")
        handles.append(_model_handle(model, look))
    if band:
        handles.append(Patch(facecolor="#555555", alpha=BAND_ALPHA * 2, label=extra[0]))
    if _cut_short(summary).any():
        handles.append(_cut_short_handle())
    _batch_axis(ax, summary["batch_size"].unique(), style)
    _value_axis(ax, style.log_y)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _grid(ax)
    _model_legend(fig, handles, style)
    return fig


@_styled
def build_latency_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Mean latency per batch size (gid ``mean_ms:<model>``) with a p50-p99 band (``band:<model>``)."""
    return _lines_per_model(summary, looks, style, "mean_ms", "latency per request (ms)",
                            "Latency against batch size (line: mean; band: p50 to p99)", band=True)  # fmt: skip


@_styled
def build_throughput_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Items per second per batch size (gid ``throughput_per_s:<model>``)."""
    return _lines_per_model(summary, looks, style, "throughput_per_s", "throughput (items/s)",
                            "Throughput against batch size (batch size × 1000 / mean latency)")  # fmt: skip


@_styled
def build_coldstart_figure(coldstart: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Stacked horizontal bars: load time, then the first inference, per model.

    Stacked because the sum is what a user waits for after starting the server: the
    time to the first answer. Horizontal so long model names stay readable.
    """
    rows = coldstart.set_index("model")
    models = list(rows.index)
    fig = _figure(style, height_scale=max(0.6, min(1.6, 0.25 + 0.12 * len(models))))
    ax = fig.add_subplot()
    total_max = float((rows["load_ms"] + rows["first_infer_ms"]).max()) / 1000
    for position, model in enumerate(models):
        look = looks[model]
        load_s, first_s = rows.at[model, "load_ms"] / 1000, rows.at[model, "first_infer_ms"] / 1000
        ax.barh(position, load_s, height=0.6, color=look.colour, edgecolor=look.colour, gid=f"load:{model}")
        ax.barh(position, first_s, left=load_s, height=0.6, color=look.colour, alpha=0.4, hatch="///",
                edgecolor=look.colour, linewidth=0.8, gid=f"first:{model}")  # fmt: skip
        ax.text(load_s + first_s + total_max * 0.01, position, f"{significant(load_s + first_s)} s",
                va="center", fontsize=style.font_size * 0.9)  # fmt: skip
    ax.set_yticks(range(len(models)))
    ax.set_yticklabels(models)
    ax.invert_yaxis()  # first model on top, as in the tables
    ax.set_xlim(0, total_max * 1.15)  # room for the totals
    ax.set_xlabel("time since the server process started (s)")
    # On the figure, not the axes: long model names push the axes right.
    fig.suptitle("Cold start: time to the first answer after the server starts")
    ax.grid(True, axis="x", color="#d9d9d9", linewidth=0.7)
    ax.set_axisbelow(True)
    legend = [
        Patch(facecolor="#777777", edgecolor="#777777", label="load (start until AVAILABLE)"),
        Patch(facecolor="#777777", alpha=0.4, hatch="///", edgecolor="#777777", label="first inference (batch 1)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=2, frameon=False)
    return fig


@_styled
def build_resources_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Server memory (peak and mean RSS) and CPU per batch size; GPU panels when measured."""
    panels = [("rss", "server memory, RSS (MB)"), ("cpu_util_pct", "server CPU utilisation (%)")]
    if summary["gpu_util_pct"].notna().any():
        panels.append(("gpu_util_pct", "GPU utilisation (%)"))
    if summary["gpu_mem_mb"].notna().any():
        panels.append(("gpu_mem_mb", "GPU memory (MB)"))
    legend = [*summary["model"].unique(), "peak RSS", "mean RSS"]
    fig = _figure(style, height_scale=1.0 if len(panels) <= 2 else 1.5, legend=legend)
    grid = fig.subplots(1 if len(panels) <= 2 else 2, 2, squeeze=False).ravel()
    for extra in grid[len(panels):]:
        extra.set_visible(False)
    handles = []
    for model, rows, look in _by_model(summary, looks):
        batch = rows["batch_size"].to_numpy()
        for ax, (column, _) in zip(grid, panels):
            if column == "rss":
                ax.plot(batch, rows["rss_peak_mb"], color=look.colour, marker=look.marker, linestyle="-",
                        linewidth=1.6, markersize=5, gid=f"rss_peak:{model}")  # fmt: skip
                ax.plot(batch, rows["rss_mean_mb"], color=look.colour, marker=look.marker, linestyle=":",
                        markerfacecolor="white", linewidth=1.6, markersize=5, gid=f"rss_mean:{model}")  # fmt: skip
            else:
                ax.plot(batch, rows[column], color=look.colour, marker=look.marker, linestyle="-",
                        linewidth=1.6, markersize=5, gid=f"{column}:{model}")  # fmt: skip
        handles.append(_model_handle(model, look, linestyle="-"))
    for ax, (column, label) in zip(grid, panels):
        _batch_axis(ax, summary["batch_size"].unique(), style)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        _grid(ax)
    grid[0].set_title("Memory: peak (solid) and mean (dotted)")
    grid[1].set_title("CPU while the timed requests ran")
    handles += [
        Line2D([], [], color="#555555", linestyle="-", marker="o", label="peak RSS"),
        Line2D([], [], color="#555555", linestyle=":", marker="o", markerfacecolor="white", label="mean RSS"),
    ]
    _model_legend(fig, handles, style)
    return fig


def ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step coordinates of the empirical CDF, starting from 0 at the smallest value."""
    ordered = np.sort(np.asarray(values, dtype=float))
    fractions = np.arange(1, ordered.size + 1) / ordered.size
    return np.concatenate([ordered[:1], ordered]), np.concatenate([[0.0], fractions])


def batch_colours(batches) -> dict[int, tuple]:
    """An ordered, colour-blind-safe ramp (viridis without its palest yellow) for batch sizes."""
    from matplotlib import colormaps

    ramp = colormaps["viridis"]
    ordered = sorted(batches)
    spots = np.linspace(0.0, 0.85, len(ordered)) if len(ordered) > 1 else [0.35]
    return {batch: ramp(spot) for batch, spot in zip(ordered, spots)}


@_styled
def build_distribution_figure(model: str, latencies: Mapping[int, np.ndarray], summary: pd.DataFrame, style: Style) -> Figure:
    """One model's latency ECDF, one step line per batch size.

    An ECDF shows every request (no smoothing, no bins), reads off any percentile
    directly, and stays honest for a series cut short at a handful of requests, where
    a violin's density estimate would invent a shape.
    """
    fig = _figure(style, legend=[f"batch {batch} (n=1,000, cut short)" for batch in latencies])
    ax = fig.add_subplot()
    rows = summary.set_index("batch_size")
    colours = batch_colours(latencies)
    for batch in sorted(latencies):
        x, y = ecdf(latencies[batch])
        label = f"batch {batch} (n={x.size - 1:,}"
        if batch in rows.index and (rows.at[batch, "truncated"] or rows.at[batch, "low_sample_percentiles"]):
            label += ", cut short" if rows.at[batch, "truncated"] else ", few samples"
        ax.plot(x, y, drawstyle="steps-post", color=colours[batch], linewidth=1.6, gid=f"ecdf:{batch}", label=label + ")")
    for name, level in LEVELS.items():
        ax.axhline(level, color="#999999", linewidth=0.7, linestyle="--", zorder=0)
        ax.annotate(name, xy=(1.0, level), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=style.font_size * 0.8, color="#555555")  # fmt: skip
    _value_axis(ax, style.log_y, which="x")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("latency per request (ms)")
    ax.set_ylabel("fraction of requests at or below")
    ax.set_title(f"{model}: latency distribution per batch size")
    _grid(ax)
    # Below the axes, like the other figures: inside, it would hide a curve's tail.
    _model_legend(fig, ax.get_lines()[: len(latencies)], style)
    return fig


def save_figure(fig: Figure, stem: Path, style: Style) -> list[Path]:
    """Write ``stem.<format>`` for every configured format, each atomically."""
    written = []
    for fmt in style.formats:
        buffer = io.BytesIO()
        # No creation date in the files, so redrawing unchanged data gives identical bytes.
        metadata = {"Date": None} if fmt == "svg" else ({"CreationDate": None} if fmt == "pdf" else {})
        with matplotlib.rc_context({"svg.hashsalt": "serveprof"}):
            fig.savefig(buffer, format=fmt, dpi=style.dpi, metadata=metadata)
        path = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
