"""``serveprof calibrate``: fit on-device measurements to the host's profiled results.

Per device, ``device = a·host + b`` by least squares (latency, and peak memory where the
CSV gives it), with R², leave-one-out error and rank agreement, and a prediction with
its interval for every profiled (model, batch size) not measured on the device. It
writes calibration.md, fits/points/predictions/ranks as .csv and .md, and the figures
latency.* and memory.* into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from serveprof.atomic import atomic_write_text
from serveprof.errors import ServeprofError
from serveprof.report.markdown import markdown_table
from serveprof.report.numbers import MISSING, significant

OUT = Path("reports/calibration")
RESULTS = Path("workload/profiling")


def _number(value, digits: int = 3) -> str:
    return significant(value, digits) if value is not None and pd.notna(value) else MISSING


def _signed(value) -> str:
    return MISSING if pd.isna(value) else f"{value:+.1f}"


def tables(calibration) -> dict[str, tuple[str, list[str], list[list[str]], pd.DataFrame]]:
    """name -> (title, header, rows, data): markdown cells and the full-precision CSV data."""
    level = f"{calibration.level * 100:g} %"
    fits = calibration.fits
    return {
        "fits": ("Fits per device: device = a·host + b, where host is the profile named",
                 ["device", "profile", "metric", "n", "a", "b", "R²", "LOO mean abs error", "LOO mean abs %", "LOO max abs %",
                  "Kendall τ", "Spearman ρ"],
                 [[row.device, row.profile, row.metric, str(row.n), _number(row.slope, 4), f"{_number(row.intercept, 4)} {row.unit}",
                   f"{row.r2:.3f}", f"{_number(row.loo_mae)} {row.unit}", _number(row.loo_mape_pct, 2), _number(row.loo_max_abs_pct, 2),
                   f"{row.kendall_tau:.2f}", f"{row.spearman_rho:.2f}"] for row in fits.itertuples()], fits),
        "points": ("Measured points, fitted and predicted without them (leave-one-out)",
                   ["device", "metric", "model", "batch", "host", "measured", "fitted", "LOO predicted", "LOO error %", "repeats"],
                   [[row.device, row.metric, row.model, str(row.batch_size), _number(row.host), _number(row.measured),
                     _number(row.fitted), _number(row.loo_predicted), _signed(row.loo_error_pct), str(row.repeats)]
                    for row in calibration.points.itertuples()], calibration.points),
        "predictions": (f"Predicted for the profiled models not measured on the device ({level} prediction interval)",
                        ["device", "metric", "model", "batch", "host", "predicted", "interval", "note"],
                        [[row.device, row.metric, row.model, str(row.batch_size), _number(row.host), _number(row.predicted),
                          f"{_number(row.low)} to {_number(row.high)}", "outside the measured range" if row.extrapolated else ""]
                         for row in calibration.predictions.itertuples()], calibration.predictions),
        "ranks": ("Rank agreement of host and device",
                  ["device", "metric", "scope", "n", "Kendall τ", "p", "Spearman ρ", "p"],
                  [[row.device, row.metric, row.scope, str(row.n), f"{row.kendall_tau:.2f}", _number(row.kendall_p, 2),
                    f"{row.spearman_rho:.2f}", _number(row.spearman_p, 2)] for row in calibration.ranks.itertuples()], calibration.ranks),
    }  # fmt: skip


def write_outputs(calibration, out: Path, style, models: list[str]) -> list[Path]:
    from serveprof.calibrate.fit_figure import build_fit_figure
    from serveprof.report.figures import save_figure

    written = []
    sections = ["# Calibration to on-device measurements\n",
                f"Host statistic: `{calibration.statistic}`. A prediction's interval is where a new on-device measurement"
                " is expected to fall; one outside the measured range of host values is an extrapolation.\n"]  # fmt: skip
    for name, (title, header, rows, data) in tables(calibration).items():
        numeric = [cell[:1].isdigit() or cell[:1] in "+-–" for cell in rows[0]] if rows else [False] * len(header)
        text = markdown_table(header, rows, numeric)
        atomic_write_text(out / f"{name}.md", text)
        atomic_write_text(out / f"{name}.csv", data.to_csv(index=False))
        written += [out / f"{name}.md", out / f"{name}.csv"]
        sections.append(f"## {title}\n\n{text}")
    for metric in dict.fromkeys(calibration.fits["metric"]):
        written += save_figure(build_fit_figure(calibration, metric, style, models), out / metric, style)
        if "png" in style.formats:
            sections.append(f"![{metric}]({metric}.png)\n")
    atomic_write_text(out / "calibration.md", "\n".join(sections))
    return [out / "calibration.md", *written]


def measured_models(folder: Path) -> list[str]:
    """Models with at least one measured batch size in a results folder (on a device, some may fit in none)."""
    return sorted(
        path.parent.name
        for path in folder.glob("*/summary.csv")
        if len(path.read_text(encoding="utf-8").strip().splitlines()) > 1
    )


def device_profiles(measured, device_results: list[str], profile: list[str], models: list[str] | None) -> dict:
    """On-device name -> (serveprof device, its summaries, its folder), for the names fitted against a device."""
    from serveprof.commands.arguments import name_value_pairs
    from serveprof.report.results import load_summary

    folders = {
        name: Path(folder)
        for name, folder in name_value_pairs(
            device_results, "--device-results", "edge=workload/devices/edge/profiling"
        ).items()
    }
    chosen = name_value_pairs(profile, "--profile", "pi4=edge")
    unknown = sorted(set(chosen.values()) - set(folders) - {"host"})
    if unknown:
        raise ServeprofError(f"--profile names device(s) {', '.join(unknown)} without --device-results",
                             f"pass --device-results {unknown[0]}=<its results folder>, or profile against host")  # fmt: skip
    profiles = {}
    for name in dict.fromkeys(measured["device"]):
        device = chosen.get(name, name if name in folders else "host")
        if device == "host" or device not in folders:
            continue
        found = [model for model in measured_models(folders[device]) if not models or model in models]
        profiles[name] = (device, load_summary(folders[device], found), str(folders[device]))
    return profiles


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof calibrate", description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument(
        "--measured",
        type=Path,
        required=True,
        help="CSV of on-device measurements: model, batch_size, device, latency_ms[, peak_memory_mb]",
    )
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help=f"the host run's results folder (default {RESULTS})"
    )
    parser.add_argument(
        "--device-results",
        nargs="+",
        default=[],
        metavar="DEVICE=FOLDER",
        help="results folders of serveprof devices, e.g. edge=workload/devices/edge/profiling: an on-device name "
        "that is one of them is fitted against that device's profile instead of the host's",
    )
    parser.add_argument(
        "--profile",
        nargs="+",
        default=[],
        metavar="MEASURED=DEVICE",
        help="fit the on-device name MEASURED against serveprof device DEVICE (of --device-results), e.g. pi4=edge",
    )
    parser.add_argument(
        "--models", nargs="+", help="the profiled models to predict (default: every model with a summary.csv)"
    )
    parser.add_argument(
        "--statistic", default="mean_ms", help="host latency statistic to fit against: mean_ms (default), p50_ms, ..."
    )
    parser.add_argument("--level", type=float, default=0.95, help="prediction interval level (default 0.95)")
    parser.add_argument(
        "--style", help="the config's plots: block as JSON, or a JSON file's path (default: the schema defaults)"
    )
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)

    from serveprof.calibrate.calibration import calibrate
    from serveprof.calibrate.measured import read_measured
    from serveprof.commands.arguments import load_style
    from serveprof.report.results import load_summary

    style = load_style(args.style)
    measured = read_measured(args.measured)
    models = args.models or sorted(path.parent.name for path in args.results.glob("*/summary.csv"))
    if not models:
        raise ServeprofError(f"{args.results} holds no profiled results (no <model>/summary.csv)",
                             "run the workflow first, or pass --results of the run to calibrate against")  # fmt: skip
    profiled = load_summary(args.results, models)
    profiles = device_profiles(measured, args.device_results, args.profile, args.models)
    calibration = calibrate(measured, profiled, args.statistic, args.level, str(args.results), profiles)
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_outputs(calibration, args.out, style, models)
    for row in calibration.fits.itertuples():
        line = calibration.lines[(row.device, row.metric)]
        print(f"{row.device} {row.metric}: {line.equation(row.unit)}, R² {row.r2:.3f}, n {row.n},"
              f" leave-one-out mean abs error {row.loo_mape_pct:.1f} %, Kendall τ {row.kendall_tau:.2f}")  # fmt: skip
    print(f"wrote {len(written)} files under {args.out}")
    return 0
