"""On-device measurements joined with the host's profiled results, fitted per device and metric.

Latency: the device's ``latency_ms`` against the host's ``mean_ms`` (or the statistic
chosen, e.g. ``p50_ms``). Memory: the device's ``peak_memory_mb`` against the server's
peak RSS (``rss_peak_mb``), for devices whose rows give it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serveprof.calibrate.fit import MIN_POINTS, Line, fit_line, leave_one_out, rank_agreement
from serveprof.errors import ServeprofError

# metric -> (device column, host column or None for the chosen statistic, unit)
METRICS = {"latency": ("latency_ms", None, "ms"), "memory": ("peak_memory_mb", "rss_peak_mb", "MiB")}
STATISTICS = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms")


@dataclass
class Calibration:
    statistic: str
    level: float
    fits: pd.DataFrame
    points: pd.DataFrame
    predictions: pd.DataFrame
    ranks: pd.DataFrame
    lines: dict[tuple[str, str], Line] = field(default_factory=dict)

    def unit(self, metric: str) -> str:
        return METRICS[metric][2]


def _check_known(measured: pd.DataFrame, profiled: pd.DataFrame, results_label: str) -> None:
    models = set(profiled["model"])
    unknown = sorted(set(measured["model"]) - models)
    if unknown:
        raise ServeprofError(
            f"the on-device CSV names model(s) {', '.join(map(repr, unknown))} with no profiled results under {results_label}"
            f" (profiled: {', '.join(sorted(models)) or 'none'})",
            "use the model keys of the workflow's config, profile those models first, or pass --results of the run that did",
        )
    pairs = set(zip(profiled["model"], profiled["batch_size"], strict=True))
    missing = [
        f"{model} b{batch}"
        for model, batch in zip(measured["model"], measured["batch_size"], strict=True)
        if (model, batch) not in pairs
    ]
    if missing:
        raise ServeprofError(
            f"the host run under {results_label} has no result for {', '.join(sorted(set(missing)))}",
            "add those batch sizes to the workflow's batch_sizes and run it, or drop those rows from the on-device CSV",
        )


def calibrate(
    measured: pd.DataFrame,
    profiled: pd.DataFrame,
    statistic: str = "mean_ms",
    level: float = 0.95,
    results_label: str = "the results folder",
    profiles: Mapping[str, tuple[str, pd.DataFrame, str]] | None = None,
) -> Calibration:
    """Fit every device (latency, and memory where given) and predict the unmeasured profiled pairs.

    ``profiles`` maps an on-device name of ``measured`` to the profile it is fitted
    against: (the configured device's name, its summaries, where they were read), e.g. a
    ``pi4`` measured on the board against serveprof's ``pi4`` device limits. A device not
    in it is fitted against ``profiled``, the unconstrained host's run.
    """
    if statistic not in STATISTICS:
        raise ServeprofError(
            f"statistic {statistic!r} is not one of {', '.join(STATISTICS)}",
            "pass --statistic mean_ms (the default) or p50_ms",
        )
    if not 0 < level < 1:
        raise ServeprofError(f"--level is {level}", "give a level between 0 and 1, e.g. --level 0.95")
    profiles = profiles or {}
    fits, points, predictions, ranks, lines = [], [], [], [], {}
    for device, rows in measured.groupby("device", sort=False):
        profile, frame, label = profiles.get(device, ("host", profiled, results_label))
        _check_known(rows, frame, label)
        host = frame.set_index(["model", "batch_size"])
        for metric, (device_column, host_column, unit) in METRICS.items():
            host_column = host_column or statistic
            given = rows[rows[device_column].notna()]
            if metric == "memory" and given.empty:
                continue  # no memory measured on this device: nothing to fit
            x = np.array(
                [
                    host.at[(model, batch), host_column]
                    for model, batch in zip(given["model"], given["batch_size"], strict=True)
                ],
                dtype=float,
            )
            y = given[device_column].to_numpy(dtype=float)
            if np.isnan(x).any():
                raise ServeprofError(f"the host run has no {host_column} for some rows of device {device!r}",
                                     f"rerun the host measurements, or drop {metric} for those rows")  # fmt: skip
            what = f"device {device!r} ({metric})"
            if metric == "memory" and x.size < MIN_POINTS:
                raise ServeprofError(
                    f"{what} has peak_memory_mb in {x.size} row(s); a line needs at least {MIN_POINTS}",
                    f"give peak_memory_mb for at least {MIN_POINTS} rows of {device!r}, or leave it empty for all its rows",
                )
            line = fit_line(x, y, what)
            lines[(device, metric)] = line
            loo = leave_one_out(x, y)
            error_pct = 100 * (loo - y) / y
            ranking = rank_agreement(x, y)
            fits.append({
                "device": device, "profile": profile, "metric": metric, "unit": unit, "host": host_column, "n": line.n,
                "slope": line.slope, "intercept": line.intercept, "r2": line.r2,
                "slope_stderr": line.slope_stderr, "intercept_stderr": line.intercept_stderr, "residual_std": line.residual_std,
                "loo_mae": float(np.nanmean(np.abs(loo - y))), "loo_mape_pct": float(np.nanmean(np.abs(error_pct))),
                "loo_max_abs_pct": float(np.nanmax(np.abs(error_pct))),
                "kendall_tau": ranking.kendall_tau, "spearman_rho": ranking.spearman_rho,
            })  # fmt: skip
            for (model, batch, repeats), xi, yi, li, ei in zip(
                given[["model", "batch_size", "repeats"]].itertuples(index=False), x, y, loo, error_pct, strict=True
            ):
                points.append({"device": device, "metric": metric, "model": model, "batch_size": int(batch), "host": xi,
                               "measured": yi, "fitted": float(line.predict(xi)), "loo_predicted": li, "loo_error_pct": ei,
                               "repeats": int(repeats)})  # fmt: skip
            ranks.append({"device": device, "metric": metric, "scope": "all points", **vars(ranking)})
            for batch, at_batch in given.assign(x=x).groupby("batch_size"):
                if len(at_batch) >= 3:  # fewer models than that make no ranking worth a number
                    ranks.append({"device": device, "metric": metric, "scope": f"batch {batch}",
                                  **vars(rank_agreement(at_batch["x"], at_batch[device_column]))})  # fmt: skip
            measured_pairs = set(zip(given["model"], given["batch_size"], strict=True))
            todo = frame[[pair not in measured_pairs for pair in zip(frame["model"], frame["batch_size"], strict=True)]]
            todo = todo[todo[host_column].notna()]
            if not todo.empty:
                x0 = todo[host_column].to_numpy(dtype=float)
                low, high = line.prediction_interval(x0, level)
                for (model, batch), xi, pi, lo, hi in zip(
                    zip(todo["model"], todo["batch_size"], strict=True), x0, line.predict(x0), low, high, strict=True
                ):
                    predictions.append({"device": device, "metric": metric, "model": model, "batch_size": int(batch),
                                        "host": xi, "predicted": pi, "low": lo, "high": hi,
                                        "extrapolated": bool(xi < line.x_min or xi > line.x_max)})  # fmt: skip
    return Calibration(
        statistic=statistic, level=level, lines=lines,
        fits=pd.DataFrame(fits),
        points=pd.DataFrame(points, columns=["device", "metric", "model", "batch_size", "host", "measured", "fitted",
                                             "loo_predicted", "loo_error_pct", "repeats"]),
        predictions=pd.DataFrame(predictions, columns=["device", "metric", "model", "batch_size", "host", "predicted", "low",
                                                       "high", "extrapolated"]),
        ranks=pd.DataFrame(ranks, columns=["device", "metric", "scope", "kendall_tau", "kendall_p", "spearman_rho", "spearman_p", "n"]),
    )  # fmt: skip
