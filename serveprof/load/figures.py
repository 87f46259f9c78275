"""The load figures, from the points' summaries only (regenerating them never measures).

- ``latency_throughput``: p99 (solid markers) and p50 (small, faint) latency against
  the throughput achieved, one line per scenario (a batching configuration, closed or
  open loop), each line's knee ringed, the SLO as a horizontal line; a point that never
  settled is drawn hollow, and one measured while the machine was busy (still disturbed
  after ``measure.retry_disturbed``) is crossed, as in the per-batch figures.
- ``batching_heatmap``: throughput and p99 over two parameters of the batching grid, at
  the scenario's highest load (closed loop when there is one); where the grid varies
  more than two parameters, each cell shows the best throughput among the others.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from serveprof.load.report import knee, ordered
from serveprof.load.scenarios import GRID_KEYS
from serveprof.report.figures import (
    DISTURBED_LABEL,
    add_grid,
    disturbed_handle,
    disturbed_rows,
    mark_disturbed,
    model_legend,
    new_figure,
    styled,
)
from serveprof.report.numbers import significant
from serveprof.report.style import LINESTYLES, MARKERS, Style

KNEE_LABEL = "knee (highest throughput / mean latency)"


def _scenario_label(scenario: str, rows: pd.DataFrame) -> str:
    mode = "closed loop" if scenario.startswith("closed") else "open loop"
    return f"{rows['batching'].iloc[0]} ({mode})"


@styled
def build_latency_throughput(model: str, summary: pd.DataFrame, slo_p99_ms: float | None, style: Style) -> Figure:
    scenarios = list(dict.fromkeys(summary["scenario"]))
    labels = [_scenario_label(scenario, summary[summary["scenario"] == scenario]) for scenario in scenarios]
    slo_label = f"SLO: p99 {slo_p99_ms:g} ms" if slo_p99_ms is not None else None
    busy = disturbed_rows(summary).any()
    extra = [*([slo_label] if slo_label else []), *([DISTURBED_LABEL] if busy else [])]
    fig = new_figure(style, legend=[*labels, KNEE_LABEL, *extra])
    ax = fig.add_subplot()
    colours = style.colours
    handles = []
    for index, (scenario, label) in enumerate(zip(scenarios, labels, strict=True)):
        rows = ordered(summary[summary["scenario"] == scenario])
        colour = colours[index % len(colours)]
        marker = MARKERS[index % len(MARKERS)]
        linestyle = "-" if scenario.startswith("closed") else LINESTYLES[1]
        ax.plot(rows["throughput_per_s"], rows["p99_ms"], color=colour, linestyle=linestyle, linewidth=1.2)
        ax.plot(rows["throughput_per_s"], rows["p50_ms"], color=colour, linestyle=":", linewidth=0.8, alpha=0.6)
        stable = rows["stable"].astype(bool)
        ax.scatter(
            rows.loc[stable, "throughput_per_s"], rows.loc[stable, "p99_ms"], color=colour, marker=marker, zorder=3
        )
        ax.scatter(
            rows.loc[~stable, "throughput_per_s"],
            rows.loc[~stable, "p99_ms"],
            facecolors="none",
            edgecolors=colour,
            marker=marker,
            zorder=3,
        )
        mark_disturbed(
            ax, rows["throughput_per_s"], rows["p99_ms"], disturbed_rows(rows).to_numpy(), f"disturbed:{scenario}"
        )
        for _, row in rows.iterrows():
            ax.annotate(
                row["point"],
                (row["throughput_per_s"], row["p99_ms"]),
                fontsize=style.font_size * 0.7,
                xytext=(3, 3),
                textcoords="offset points",
            )
        at = knee(rows)
        if at is not None:
            ax.scatter(
                [rows.loc[at, "throughput_per_s"]],
                [rows.loc[at, "p99_ms"]],
                s=180,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=4,
            )
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle=linestyle, label=label))
    handles.append(
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markerfacecolor="none",
            markersize=11,
            linestyle="",
            label=KNEE_LABEL,
        )
    )
    if slo_p99_ms is not None:
        ax.axhline(slo_p99_ms, color="firebrick", linestyle="--", linewidth=1)
        handles.append(Line2D([], [], color="firebrick", linestyle="--", label=slo_label))
    if busy:
        handles.append(disturbed_handle())
    if style.log_y:
        ax.set_yscale("log")
    ax.set_xlabel("throughput achieved (items/s)")
    ax.set_ylabel("latency (ms): p99, p50 dotted")
    ax.set_title(f"{model}: latency against throughput; hollow: never stable")
    add_grid(ax)
    model_legend(fig, handles, style)
    return fig


def heatmap_axes(summary: pd.DataFrame, documents: dict[str, dict]) -> tuple[str, str | None] | None:
    """The two grid parameters that vary most among the batching scenarios (None: none varies; a
    second None: only one varies, drawn as a single row)."""
    values: dict[str, set] = {key: set() for key in GRID_KEYS}
    for scenario in summary["scenario"].unique():
        batching = (documents.get(scenario) or {}).get("batching") or {}
        for key in GRID_KEYS:
            if key in batching:
                values[key].add(str(batching[key]))
    varied = sorted((key for key in GRID_KEYS if len(values[key]) > 1), key=lambda key: -len(values[key]))
    if not varied:
        return None
    if len(varied) == 1:
        return varied[0], None
    return varied[0], varied[1]


@styled
def build_heatmap(model: str, summary: pd.DataFrame, documents: dict[str, dict], style: Style) -> Figure:
    """``documents``: scenario -> one of its points' JSON (for its batching parameters)."""
    axes = heatmap_axes(summary, documents)
    fig = new_figure(style)
    if axes is None:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "load.batching varies no parameter: nothing to map", ha="center", va="center")
        ax.set_axis_off()
        return fig
    x_key, y_key = axes
    mode = "closed" if (summary["mode"] == "closed").any() else "open"
    rows = summary[(summary["mode"] == mode) & (summary["batching"] != "batching off")].copy()
    level = "concurrency" if mode == "closed" else "target_rate_per_s"
    top = rows[level].max()
    rows = rows[rows[level] == top]
    rows["x"] = [str((documents[s].get("batching") or {}).get(x_key)) for s in rows["scenario"]]
    rows["y"] = [str((documents[s].get("batching") or {}).get(y_key)) if y_key else "" for s in rows["scenario"]]
    best = rows.sort_values("throughput_per_s", ascending=False).drop_duplicates(["x", "y"])
    xs = sorted(best["x"].unique(), key=_natural)
    ys = sorted(best["y"].unique(), key=_natural)
    load = f"{int(top)} clients" if mode == "closed" else f"{top:g} requests/s"
    for panel, (column, title, cmap) in enumerate(
        (("throughput_per_s", "throughput (items/s)", "viridis"), ("p99_ms", "p99 latency (ms)", "magma_r"))
    ):
        ax = fig.add_subplot(1, 2, panel + 1)
        grid = best.pivot(index="y", columns="x", values=column).reindex(index=ys, columns=xs)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, aspect="auto", origin="lower")
        for (i, j), value in pd.DataFrame(grid.to_numpy(dtype=float)).stack().items():
            colour = label_colour(image.cmap(image.norm(value)))
            ax.text(j, i, significant(value), ha="center", va="center", fontsize=style.font_size * 0.8, color=colour)
        ax.set_xticks(range(len(xs)), xs)
        ax.set_yticks(range(len(ys)), ys)
        ax.set_xlabel(x_key)
        ax.set_ylabel(y_key or "")
        ax.set_title(title)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(f"{model}: batching grid at {load}")
    return fig


def relative_luminance(rgba) -> float:
    """WCAG 2's relative luminance of an sRGB colour (0 black, 1 white)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def label_colour(rgba) -> str:
    """Black or white, whichever contrasts more with a cell of colour ``rgba``: the two contrasts,
    (L + 0.05) / 0.05 and 1.05 / (L + 0.05), are equal at L = 0.179."""
    return "black" if relative_luminance(rgba) > 0.179 else "white"


def _natural(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)
