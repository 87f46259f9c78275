"""The report's figures, each built as a matplotlib Figure from result frames only.

Builders return the Figure without saving it, so tests can read the plotted data back
from the artists; ``save_figure`` writes it in every configured format. Every artist
that carries data has a gid (``"mean_ms:<model>"``, ``"ecdf:<batch>"``, ...) so a test
or a script can find it without relying on drawing order.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # never a display: figures are files

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.textpath import TextToPath
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullLocator

from serveprof.atomic import atomic_write_bytes
from serveprof.report.numbers import significant
from serveprof.report.style import ModelLook, Style

OVERVIEW_KINDS = ("latency", "throughput", "coldstart", "resources")
PER_MODEL_KINDS = ("distribution",)
BAND_ALPHA = 0.18
# Percentile levels marked on the distribution figures.
LEVELS = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
SECONDS_FROM_MS = 10_000  # a latency axis reaching 10 s reads in seconds
MAX_LEGEND_COLUMNS = 5
BAR_HEIGHT = 0.5  # cold-start bars, in rows
BAND_LABEL = "band: p50 to p99"
CUT_SHORT_LABEL = "open marker: series cut short"
DISTURBED_LABEL = "×: measured while the machine was busy (disturbed)"
_TEXT_PATH = TextToPath()


def styled(build):
    """Run a builder under the style's font size (text takes its size when created)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        style = kwargs.get("style") or next(arg for arg in args if isinstance(arg, Style))
        with matplotlib.rc_context({"font.size": style.font_size}):
            return build(*args, **kwargs)

    return wrapper


def new_figure(style: Style, height_scale: float = 1.0, legend: list[str] | None = None) -> Figure:
    """A figure whose plot area keeps the configured size; a legend below adds height."""
    extra = 0.0
    if legend:
        _, rows = _legend_layout(legend, style)
        extra = rows * style.font_size * 1.5 / 72 + 0.15
    return Figure(figsize=(style.width_in, style.height_in * height_scale + extra), dpi=style.dpi, layout="constrained")


def tick_text(value: float, scale: float = 1.0) -> str:
    """A tick label: ``value / scale`` to three significant digits at most, without
    trailing zeros or powers of ten, thousands separated (0.03, 1.5, 20, 14,000)."""
    value = float(value) / scale
    if value == 0 or not np.isfinite(value):
        return "0"
    decimals = max(2 - math.floor(math.log10(abs(value))), 0)
    text = f"{value:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _plain_numbers(axis, scale: float = 1.0) -> None:
    """Tick labels as plain numbers (20, 50, 100), not powers of ten, on any scale.

    ``scale`` divides the label only: the artists keep the CSV values, so an axis of
    milliseconds can read in seconds without the plotted data changing unit.
    """
    axis.set_major_formatter(FuncFormatter(lambda value, _: tick_text(value, scale) if value > 0 else "0"))
    axis.set_minor_formatter(FuncFormatter(lambda value, _: ""))


def time_unit(values_ms) -> tuple[str, float]:
    """("s", 1000) when the largest latency reaches SECONDS_FROM: 60 reads better than 60,000."""
    values = np.asarray(values_ms, dtype=float)
    top = np.nanmax(values) if values.size and not np.isnan(values).all() else 0.0
    return ("s", 1000.0) if top >= SECONDS_FROM_MS else ("ms", 1.0)


def _value_axis(ax: Axes, log: bool, which: str = "y", scale: float = 1.0) -> None:
    """A latency or throughput axis; call after plotting, the ticks follow the data range."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    if log:
        (ax.set_yscale if which == "y" else ax.set_xscale)("log")
        low, high = sorted(ax.get_ylim() if which == "y" else ax.get_xlim())
        decades = np.log10(high / low) if low > 0 else 3
        # Enough labelled ticks to read a value off a narrow range, few enough for a wide one.
        subs = (
            (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 3.0, 5.0) if decades < 2.5
            else (1.0, 2.0, 5.0) if decades < 3.5 else (1.0, 3.0) if decades < 5 else (1.0,)
        )  # fmt: skip
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_minor_locator(LogLocator(base=10, subs=np.arange(1.0, 10.0)))
    _plain_numbers(axis, scale)


def _batch_axis(ax: Axes, batches, style: Style) -> None:
    """Batch sizes as the ticks, log base 2 when configured (batch sizes double)."""
    if style.log_x:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(batches))
    ax.set_xticklabels([str(batch) for batch in sorted(batches)])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("batch size (items per request)")


def add_grid(ax: Axes) -> None:
    ax.grid(True, which="major", color="#d9d9d9", linewidth=0.7)
    ax.set_axisbelow(True)


def text_width_pt(text: str, size: float) -> float:
    """The width of ``text`` in points at ``size``, in the default font (no figure needed)."""
    width, _, _ = _TEXT_PATH.get_text_width_height_descent(text, FontProperties(size=size), ismath=False)
    return width


def fitted(text: str, width_pt: float, size: float) -> str:
    """``text`` on one line if it fits ``width_pt``, else on two: split after a colon or
    before a parenthesis, whichever comes first, else at the space nearest the middle
    (a title or an axis label that would run past its panel)."""
    if text_width_pt(text, size) <= width_pt or " " not in text:
        return text
    # Whichever comes first: "Cold start: time to ..." and "Latency ... (line: mean; ...)".
    colon, parenthesis = text.find(": "), text.find(" (")
    if colon >= 0 and (parenthesis < 0 or colon < parenthesis):
        return f"{text[:colon]}\n{text[colon + 2 :]}"
    if parenthesis >= 0:
        return f"{text[:parenthesis]}\n{text[parenthesis + 1 :]}"
    spaces = [index for index, char in enumerate(text) if char == " "]
    cut = min(spaces, key=lambda index: abs(index - len(text) / 2))
    return f"{text[:cut]}\n{text[cut + 1 :]}"


def title_width(style: Style, panels: int = 1, margin_em: float = 4.0) -> float:
    """Points available to a text centred over one of ``panels`` side-by-side axes.

    The axes sit right of their tick labels, so a centred text reaches the right edge
    first: ``margin_em`` (in font sizes) keeps it inside.
    """
    return style.width_in * 72 / panels - margin_em * style.font_size


def _legend_layout(labels: list[str], style: Style, width_in: float | None = None) -> tuple[int, int]:
    """(columns, rows) of the widest legend that fits below the axes, at most MAX_LEGEND_COLUMNS.

    Measured from the labels' real widths, laid out as matplotlib does (columns filled
    top to bottom, each as wide as its widest entry), so 8 models and two key entries
    take two rows when their names are short and more only when they must.
    """
    if not labels:
        return 1, 0
    size = style.font_size
    # handle (2 em) + pad (0.8 em) + text; 2 em between columns; border pads either side.
    widths = np.array([text_width_pt(label, size) + 2.8 * size for label in labels])
    available = (width_in or style.width_in) * 72 - 2 * size
    for columns in range(min(len(labels), MAX_LEGEND_COLUMNS), 0, -1):
        parts = [part for part in np.array_split(widths, columns) if part.size]
        if sum(part.max() for part in parts) + (len(parts) - 1) * 2.0 * size + 0.8 * size <= available:
            return columns, -(-len(labels) // columns)
    return 1, len(labels)


def model_legend(fig: Figure, handles: list, style: Style) -> None:
    labels = [handle.get_label() for handle in handles]
    columns, _ = _legend_layout(labels, style)
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, frameon=False)


def _model_handle(look: ModelLook, **overrides) -> Line2D:
    settings = dict(color=look.colour, marker=look.marker, linestyle=look.linestyle, label=look.label)
    settings.update(overrides)
    return Line2D([], [], **settings)


def _legend_labels(summary: pd.DataFrame, looks: Mapping[str, ModelLook], extra: list[str]) -> list[str]:
    labels = [looks[model].label for model in summary["model"].unique()] + extra
    labels += [CUT_SHORT_LABEL] if _cut_short(summary).any() else []
    return labels + [DISTURBED_LABEL] if disturbed_rows(summary).any() else labels


def disturbed_rows(rows: pd.DataFrame) -> pd.Series:
    """Series the disturbance sampler flagged and the retries did not clear (False for runs without it)."""
    return rows["disturbed"].astype(bool) if "disturbed" in rows else pd.Series(False, index=rows.index)


def mark_disturbed(ax: Axes, x, y, mask, gid: str) -> None:
    if mask.any():
        ax.plot(np.asarray(x)[mask], np.asarray(y)[mask], linestyle="none", marker="x", color="#222222",
                markersize=9, markeredgewidth=1.6, zorder=5, gid=gid)  # fmt: skip


def disturbed_handle() -> Line2D:
    return Line2D([], [], linestyle="none", marker="x", color="#222222", markersize=8, label=DISTURBED_LABEL)


def _cut_short(rows: pd.DataFrame) -> pd.Series:
    return rows["truncated"].astype(bool) | rows["low_sample_percentiles"].map(bool)


def _mark_cut_short(ax: Axes, x, y, mask, look: ModelLook, gid: str) -> None:
    """Open markers over points whose series was cut short or has too few samples."""
    if mask.any():
        ax.plot(np.asarray(x)[mask], np.asarray(y)[mask], linestyle="none", marker=look.marker,
                markerfacecolor="white", markeredgecolor=look.colour, markersize=6, zorder=4, gid=gid)  # fmt: skip


def _cut_short_handle() -> Line2D:
    return Line2D([], [], linestyle="none", marker="o", markerfacecolor="white", markeredgecolor="#555555",
                  label=CUT_SHORT_LABEL)  # fmt: skip


def _by_model(summary: pd.DataFrame, looks: Mapping[str, ModelLook]):
    for model, rows in summary.groupby("model", sort=False):
        yield model, rows.sort_values("batch_size"), looks[model]


def _lines_per_model(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style, column: str,
                     ylabel: str, title: str, band: bool = False, time: bool = False) -> Figure:  # fmt: skip
    """One line of ``column`` against batch size per model (gid ``<column>:<model>``).

    ``time``: the values are milliseconds, shown in seconds when they reach 10 s
    (``ylabel`` takes the unit through ``{unit}``).
    """
    extra = [BAND_LABEL] if band else []
    fig = new_figure(style, legend=_legend_labels(summary, looks, extra))
    ax = fig.add_subplot()
    handles = []
    for model, rows, look in _by_model(summary, looks):
        batch = rows["batch_size"].to_numpy()
        if band:
            ax.fill_between(
                batch,
                rows["p50_ms"],
                rows["p99_ms"],
                color=look.colour,
                alpha=BAND_ALPHA,
                linewidth=0,
                gid=f"band:{model}",
            )
        ax.plot(batch, rows[column], color=look.colour, marker=look.marker, linestyle=look.linestyle,
                linewidth=1.8, markersize=5, gid=f"{column}:{model}", label=look.label)  # fmt: skip
        _mark_cut_short(ax, batch, rows[column], _cut_short(rows).to_numpy(), look, f"cut:{model}")
        mark_disturbed(ax, batch, rows[column], disturbed_rows(rows).to_numpy(), f"disturbed:{model}")
        handles.append(_model_handle(look))
    if band:
        handles.append(Patch(facecolor="#555555", alpha=BAND_ALPHA * 2, label=BAND_LABEL))
    if _cut_short(summary).any():
        handles.append(_cut_short_handle())
    if disturbed_rows(summary).any():
        handles.append(disturbed_handle())
    unit, scale = time_unit(summary[[column, "p99_ms"] if band else [column]].to_numpy().ravel()) if time else ("", 1.0)
    _batch_axis(ax, summary["batch_size"].unique(), style)
    _value_axis(ax, style.log_y, scale=scale)
    ax.set_ylabel(ylabel.format(unit=unit))
    ax.set_title(fitted(title, title_width(style), style.font_size * 1.2))
    add_grid(ax)
    model_legend(fig, handles, style)
    return fig


@styled
def build_latency_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Mean latency per batch size (gid ``mean_ms:<model>``) with a p50-p99 band (``band:<model>``).

    The artists hold milliseconds, as in summary.csv; the axis reads in seconds when
    the latencies reach 10 s (its label names the unit).
    """
    return _lines_per_model(summary, looks, style, "mean_ms", "latency per request ({unit})",
                            "Latency against batch size (line: mean; band: p50 to p99)", band=True, time=True)  # fmt: skip


@styled
def build_throughput_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Items per second per batch size (gid ``throughput_per_s:<model>``)."""
    return _lines_per_model(summary, looks, style, "throughput_per_s", "throughput (items/s)",
                            "Throughput against batch size (batch size × 1000 / mean latency)")  # fmt: skip


@styled
def build_coldstart_figure(coldstart: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Stacked horizontal bars: load time, then the first inference, per model.

    Stacked because the sum is what a user waits for after starting the server: the
    time to the first answer. Each model's name stands above its bar (gid
    ``label:<model>``), not beside the axis, so a long name costs no bar length.
    """
    rows = coldstart.set_index("model")
    models = list(rows.index)
    legend = ["load (start until AVAILABLE)", "first inference (batch 1)"]
    # Each bar with its name above takes a fixed height (in font sizes); title, axis and legend the rest.
    wanted_in = 1.0 + len(models) * 0.045 * style.font_size
    fig = new_figure(style, height_scale=min(3.0, max(0.4, wanted_in / style.height_in)), legend=legend)
    ax = fig.add_subplot()
    totals = (rows["load_ms"] + rows["first_infer_ms"]) / 1000
    total_max = float(totals.max())
    for position, model in enumerate(models):
        look = looks[model]
        load_s, first_s = rows.at[model, "load_ms"] / 1000, rows.at[model, "first_infer_ms"] / 1000
        ax.barh(position, load_s, height=BAR_HEIGHT, color=look.colour, edgecolor=look.colour, gid=f"load:{model}")
        ax.barh(position, first_s, left=load_s, height=BAR_HEIGHT, color=look.colour, alpha=0.4, hatch="///",
                edgecolor=look.colour, linewidth=0.8, gid=f"first:{model}")  # fmt: skip
        disturbed = "disturbed" in rows and bool(rows.at[model, "disturbed"])
        name = f"{look.label} (disturbed ×)" if disturbed else look.label
        ax.annotate(name, xy=(0, position - BAR_HEIGHT / 2), xytext=(1, 2), textcoords="offset points",
                    ha="left", va="bottom", gid=f"label:{model}",
                    bbox=dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85))  # fmt: skip
        ax.annotate(f"{significant(load_s + first_s)} s", xy=(load_s + first_s, position), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=style.font_size * 0.9, gid=f"total:{model}")  # fmt: skip
    ax.set_yticks([])
    # Room above the first bar for its name; the first model on top, as in the tables.
    ax.set_ylim(len(models) - 1 + 0.5, -0.5 - BAR_HEIGHT)
    ax.set_xlim(0, total_max * 1.12)  # room for the totals
    ax.set_xlabel("time since the server process started (s)")
    ax.set_title(
        fitted(
            "Cold start: time to the first answer after the server starts", title_width(style), style.font_size * 1.2
        )
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(True, axis="x", color="#d9d9d9", linewidth=0.7)
    ax.set_axisbelow(True)
    handles = [
        Patch(facecolor="#777777", edgecolor="#777777", label=legend[0]),
        Patch(facecolor="#777777", alpha=0.4, hatch="///", edgecolor="#777777", label=legend[1]),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, frameon=False)
    return fig


@styled
def build_resources_figure(summary: pd.DataFrame, looks: Mapping[str, ModelLook], style: Style) -> Figure:
    """Server memory (peak and mean RSS, MiB) and CPU (% of one core) per batch size; GPU panels when measured."""
    panels = [("rss", "server memory, RSS (MiB)"), ("cpu_util_pct", "server CPU (% of one core)")]
    if summary["gpu_util_pct"].notna().any():
        panels.append(("gpu_util_pct", "GPU utilisation (%)"))
    if summary["gpu_mem_mb"].notna().any():
        panels.append(("gpu_mem_mb", "GPU memory (MiB)"))
    legend = [*(looks[model].label for model in summary["model"].unique()), "peak RSS", "mean RSS"]
    fig = new_figure(style, height_scale=1.0 if len(panels) <= 2 else 1.5, legend=legend)
    grid = fig.subplots(1 if len(panels) <= 2 else 2, 2, squeeze=False).ravel()
    for extra in grid[len(panels) :]:
        extra.set_visible(False)
    handles = []
    for model, rows, look in _by_model(summary, looks):
        batch = rows["batch_size"].to_numpy()
        for ax, (column, _) in zip(grid, panels, strict=False):  # the grid may have a spare axis
            if column == "rss":
                ax.plot(batch, rows["rss_peak_mb"], color=look.colour, marker=look.marker, linestyle="-",
                        linewidth=1.6, markersize=5, gid=f"rss_peak:{model}")  # fmt: skip
                # No markers on the mean: fewer symbols, and an open marker means "cut short" elsewhere.
                ax.plot(
                    batch, rows["rss_mean_mb"], color=look.colour, linestyle=":", linewidth=1.6, gid=f"rss_mean:{model}"
                )
            else:
                ax.plot(batch, rows[column], color=look.colour, marker=look.marker, linestyle="-",
                        linewidth=1.6, markersize=5, gid=f"{column}:{model}")  # fmt: skip
        handles.append(_model_handle(look, linestyle="-"))
    for ax, (_column, label) in zip(grid, panels, strict=False):
        _batch_axis(ax, summary["batch_size"].unique(), style)
        ax.set_xlabel(fitted(ax.get_xlabel(), title_width(style, 2, margin_em=5), style.font_size))
        ax.set_ylabel(label)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 5, 10]))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: tick_text(value) if value > 0 else "0"))
        ax.set_ylim(bottom=0)
        add_grid(ax)
    cpu = grid[1]
    # 100 % is one core busy: the line a reader compares every point with.
    top = summary["cpu_util_pct"].max()  # NaN when no CPU was sampled (a server in a container)
    cpu.set_ylim(0, (100.0 if pd.isna(top) else max(float(top), 100.0)) * 1.12)
    cpu.axhline(100, color="#777777", linewidth=0.9, linestyle="--", zorder=1, gid="one_core")
    cpu.annotate("100 % = one core busy", xy=(0, 100), xycoords=("axes fraction", "data"), xytext=(3, 2),
                 textcoords="offset points", va="bottom", fontsize=style.font_size * 0.8, color="#555555")  # fmt: skip
    for ax, title in zip(
        grid, ("Memory: peak (solid) and mean (dotted)", "CPU while the timed requests ran"), strict=False
    ):
        # The left title may run over the tick labels; the right one must stop at the figure's edge.
        margin = 2.0 if ax is grid[0] else 5.0
        ax.set_title(fitted(title, title_width(style, 2, margin), style.font_size * 1.2))
    handles += [
        Line2D([], [], color="#555555", linestyle="-", marker="o", label="peak RSS"),
        Line2D([], [], color="#555555", linestyle=":", label="mean RSS"),
    ]
    model_legend(fig, handles, style)
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
    return {batch: ramp(spot) for batch, spot in zip(ordered, spots, strict=True)}


@styled
def build_distribution_figure(
    model: str, latencies: Mapping[int, np.ndarray], summary: pd.DataFrame, style: Style
) -> Figure:
    """One model's latency ECDF, one step line per batch size.

    An ECDF shows every request (no smoothing, no bins), reads off any percentile
    directly, and stays honest for a series cut short at a handful of requests, where
    a violin's density estimate would invent a shape.
    """
    rows = summary.set_index("batch_size")
    labels = {}
    for batch in sorted(latencies):
        label = f"batch {batch} (n={latencies[batch].size:,}"
        if batch in rows.index and (rows.at[batch, "truncated"] or rows.at[batch, "low_sample_percentiles"]):
            label += ", cut short" if rows.at[batch, "truncated"] else ", few samples"
        if batch in rows.index and "disturbed" in rows and rows.at[batch, "disturbed"]:
            label += ", disturbed"
        labels[batch] = label + ")"
    fig = new_figure(style, legend=list(labels.values()))
    ax = fig.add_subplot()
    colours = batch_colours(latencies)
    for batch, label in labels.items():
        x, y = ecdf(latencies[batch])
        ax.plot(x, y, drawstyle="steps-post", color=colours[batch], linewidth=1.6, gid=f"ecdf:{batch}", label=label)
    for name, level in LEVELS.items():
        ax.axhline(level, color="#999999", linewidth=0.7, linestyle="--", zorder=0)
        ax.annotate(name, xy=(1.0, level), xycoords=("axes fraction", "data"), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=style.font_size * 0.8, color="#555555")  # fmt: skip
    unit, scale = time_unit(np.concatenate([np.asarray(values, dtype=float) for values in latencies.values()]))
    _value_axis(ax, style.log_y, which="x", scale=scale)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"latency per request ({unit})")
    ax.set_ylabel("fraction of requests at or below")
    # A long model key goes on a line of its own rather than past the figure's edge.
    ax.set_title(fitted(f"{model}: latency distribution per batch size", title_width(style), style.font_size * 1.2))
    add_grid(ax)
    # Below the axes, like the other figures: inside, it would hide a curve's tail.
    model_legend(fig, ax.get_lines()[: len(latencies)], style)
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
