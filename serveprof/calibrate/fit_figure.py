"""Calibration figures: per device, the on-device value against the host's, with the fitted line.

One panel per device. Filled markers are measured on the device; open markers are the
predictions for profiled models not measured there, with their prediction interval as
a vertical bar. The equation, R² and n stand in the panel's corner. Axes are linear:
on log axes a line with an intercept would look bent. Gids: ``measured:<device>:<model>``,
``predicted:<device>:<model>``, ``interval:<device>:<model>``, ``fit:<device>``,
``equation:<device>``.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from serveprof.calibrate.calibration import Calibration
from serveprof.report.figures import add_grid, fitted, model_legend, new_figure, styled, tick_text, title_width
from serveprof.report.style import Style, model_looks

MAX_COLUMNS = 3
TITLES = {
    "latency": "On-device latency against the host's",
    "memory": "On-device peak memory against the server's peak RSS",
}


@styled
def build_fit_figure(calibration: Calibration, metric: str, style: Style, models: list[str] | None = None) -> Figure:
    fits = calibration.fits[calibration.fits["metric"] == metric]
    devices = list(fits["device"])
    points = calibration.points[calibration.points["metric"] == metric]
    predictions = calibration.predictions[calibration.predictions["metric"] == metric]
    looks = model_looks(models or sorted(set(points["model"]) | set(predictions["model"])), style)
    shown = [model for model in looks if model in set(points["model"]) | set(predictions["model"])]
    level = f"{calibration.level * 100:g} %"
    legend = [looks[model].label for model in shown] + [
        "measured on the device",
        f"predicted ({level} prediction interval)",
        "fit",
    ]
    columns = min(len(devices), MAX_COLUMNS)
    rows = math.ceil(len(devices) / columns)
    fig = new_figure(style, height_scale=rows, legend=legend)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for extra in axes[len(devices) :]:
        extra.set_visible(False)
    unit = calibration.unit(metric)
    host = fits["host"].iloc[0]
    for ax, (_, fit) in zip(axes, fits.iterrows(), strict=True):
        device = fit["device"]
        line = calibration.lines[(device, metric)]
        here, todo = points[points["device"] == device], predictions[predictions["device"] == device]
        for model in shown:
            look = looks[model]
            mine = here[here["model"] == model]
            if not mine.empty:
                ax.plot(mine["host"], mine["measured"], linestyle="none", marker=look.marker, color=look.colour,
                        gid=f"measured:{device}:{model}")  # fmt: skip
            guess = todo[todo["model"] == model]
            if not guess.empty:
                ax.vlines(guess["host"], guess["low"], guess["high"], color=look.colour, linewidth=1.0, alpha=0.7,
                          gid=f"interval:{device}:{model}")  # fmt: skip
                ax.plot(guess["host"], guess["predicted"], linestyle="none", marker=look.marker, color=look.colour,
                        markerfacecolor="white", gid=f"predicted:{device}:{model}")  # fmt: skip
        xs = np.concatenate([here["host"].to_numpy(float), todo["host"].to_numpy(float)])
        # Latency axes start at zero, where the intercept (a fixed cost per request) shows;
        # memory sits on a large base, so its axes follow the data.
        start = min(0.0, xs.min()) if metric == "latency" else xs.min() - 0.05 * np.ptp(xs)
        span = np.linspace(start, xs.max() + 0.05 * np.ptp(xs), 50)
        ax.plot(span, line.predict(span), color="#333333", linewidth=1.0, gid=f"fit:{device}")
        ax.text(0.03, 0.97, f"{line.equation(unit)}\nR² = {line.r2:.3f}, n = {line.n}", transform=ax.transAxes, va="top",
                ha="left", fontsize=style.font_size * 0.9, gid=f"equation:{device}",
                bbox=dict(boxstyle="round,pad=0.3", facecolor="white", edgecolor="#cccccc"))  # fmt: skip
        ax.set_title(fitted(str(device), title_width(style, columns), style.font_size))
        ax.set_xlabel(f"host {host} ({unit})" if metric == "latency" else f"server peak RSS on the host ({unit})")
        ax.set_ylabel(f"on the device ({unit})")
        if metric == "latency":
            ax.set_xlim(left=0)
            ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda value, _: tick_text(value)))
        add_grid(ax)
    fig.suptitle(fitted(TITLES[metric], title_width(style), style.font_size * 1.2))
    handles = [Line2D([], [], linestyle="none", marker=looks[model].marker, color=looks[model].colour, label=looks[model].label)
               for model in shown]  # fmt: skip
    handles += [
        Line2D([], [], linestyle="none", marker="o", color="#555555", label=legend[-3]),
        Line2D([], [], linestyle="-", marker="o", color="#555555", markerfacecolor="white", label=legend[-2]),
        Line2D([], [], color="#333333", label=legend[-1]),
    ]
    model_legend(fig, handles, style)
    return fig
