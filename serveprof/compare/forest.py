"""The comparison's figure: a forest plot of each series' relative latency change with its interval.

One row per series; a circle for p50 and a diamond for p99, each on a line spanning its
confidence interval, coloured by its verdict. The shaded band is ±threshold: a change
counts only when its interval leaves zero and its point lies outside the band. Artists
carry gids (``p50:<series>``, ``ci:p99:<series>``) so tests and scripts can read the
plotted values back.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from serveprof.compare.changes import IMPROVEMENT, NOISE, REGRESSION, TOO_FEW
from serveprof.compare.comparison import Comparison
from serveprof.report.figures import add_grid, fitted, new_figure, styled, tick_text, title_width
from serveprof.report.style import PALETTES, Style

# Okabe-Ito vermillion and blue (apart for every colour vision), grey for no change.
VERDICT_COLOURS = {
    REGRESSION: PALETTES["okabe_ito"][3],
    IMPROVEMENT: PALETTES["okabe_ito"][4],
    NOISE: "#555555",
    TOO_FEW: "#aaaaaa",
}
METRIC_MARKERS = {"p50": "o", "p99": "D"}
OFFSETS = {"p50": -0.17, "p99": 0.17}
ROW_HEIGHT_IN = 0.3
# Rows drawn at most: a figure for thousands of series would pass matplotlib's pixel
# limit and show nothing a reader could find. The table keeps every series.
MAX_ROWS = 120


def _percent(value: float, _=None) -> str:
    return "0" if value == 0 else f"{'+' if value > 0 else '−'}{tick_text(abs(value))} %"


def shown_rows(rows: pd.DataFrame, limit: int = MAX_ROWS) -> pd.DataFrame:
    """All rows if they fit; else every regression, improvement and disturbed series, then
    the largest p50 changes, in the table's order."""
    if len(rows) <= limit:
        return rows
    first = rows["verdict"].isin([REGRESSION, IMPROVEMENT]) | rows["disturbed_base"] | rows["disturbed_new"]
    size = rows["p50_change_pct"].abs().fillna(0) + first * 1e9  # the series that matter first
    return rows.loc[sorted(size.nlargest(limit).index)]


@styled
def build_forest_figure(comparison: Comparison, style: Style) -> Figure:
    rows = shown_rows(comparison.rows.reset_index(drop=True)).reset_index(drop=True)
    threshold = comparison.settings.threshold_pct
    legend = ["p50", "p99", REGRESSION, IMPROVEMENT, NOISE, f"±{threshold:g} % threshold"]
    wanted_in = 1.6 + ROW_HEIGHT_IN * len(rows)
    fig = new_figure(style, height_scale=max(0.6, wanted_in / style.height_in), legend=legend)
    ax = fig.add_subplot()
    ax.axvspan(-threshold, threshold, color="#eeeeee", zorder=0, gid="threshold")
    ax.axvline(0, color="#333333", linewidth=0.8, zorder=1)
    for position, row in rows.iterrows():
        for metric, offset in OFFSETS.items():
            verdict = row[f"{metric}_verdict"]
            colour = VERDICT_COLOURS[verdict]
            y = position + offset
            low, high = row[f"{metric}_change_low_pct"], row[f"{metric}_change_high_pct"]
            if np.isfinite(low) and np.isfinite(high):
                ax.plot(
                    [low, high],
                    [y, y],
                    color=colour,
                    linewidth=1.6,
                    solid_capstyle="butt",
                    gid=f"ci:{metric}:{row['series']}",
                )
            ax.plot([row[f"{metric}_change_pct"]], [y], linestyle="none", marker=METRIC_MARKERS[metric], markersize=6,
                    color=colour, markerfacecolor="white" if verdict == TOO_FEW else colour, gid=f"{metric}:{row['series']}")  # fmt: skip
    ax.set_yticks(range(len(rows)))
    # A series measured while the machine was busy says so where it is read.
    ax.set_yticklabels(
        [
            f"{row['series']} (disturbed)" if row["disturbed_base"] or row["disturbed_new"] else row["series"]
            for _, row in rows.iterrows()
        ]
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first series on top, as in the table
    ax.xaxis.set_major_formatter(FuncFormatter(_percent))
    ax.set_xlabel(
        f"latency change from base to new (+ is slower; lines: {comparison.settings.confidence * 100:g} % intervals)"
    )
    title = f"Latency change: {comparison.new.label} against {comparison.base.label}"
    if len(rows) < len(comparison.rows):
        title += f" ({len(rows)} of {len(comparison.rows)} series: every verdict, then the largest changes)"
    ax.set_title(fitted(title, title_width(style), style.font_size * 1.2))
    add_grid(ax)
    handles = [
        Line2D([], [], linestyle="none", marker=METRIC_MARKERS["p50"], color="#555555", label="p50"),
        Line2D([], [], linestyle="none", marker=METRIC_MARKERS["p99"], color="#555555", label="p99"),
        *(Patch(color=VERDICT_COLOURS[verdict], label=verdict) for verdict in (REGRESSION, IMPROVEMENT, NOISE)),
        Patch(color="#eeeeee", label=legend[-1]),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    return fig
