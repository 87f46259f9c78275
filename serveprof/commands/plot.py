"""``serveprof plot``: draw the figures from existing result CSVs. It never measures.

One job can draw one figure kind (``--only latency``) or one model's figures
(``--model nasnet``), so a workflow reruns only the figures whose inputs changed.
By hand, ``--config config/config.yaml`` takes the style, the colour order and the models
from the workflow's config, so the figures are the ones the workflow draws.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof import settings
from serveprof.commands.arguments import load_style
from serveprof.errors import ServeprofError
from serveprof.report import figures
from serveprof.report.results import load_coldstart, load_latencies, load_summary
from serveprof.report.style import Style, model_looks

KINDS = figures.OVERVIEW_KINDS + figures.PER_MODEL_KINDS


def parse_kinds(text: str | None) -> list[str]:
    if text is None:
        return list(KINDS)
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise ServeprofError(
            f"--only names unknown figure kind(s) {', '.join(map(repr, unknown)) or '(none given)'}",
            f"pass a comma-separated list of {', '.join(KINDS)}",
        )
    return list(dict.fromkeys(kinds))


def draw_overview(
    results: Path, models: list[str], all_models: list[str], kinds: list[str], style: Style, out: Path
) -> list[Path]:
    looks = model_looks(all_models, style)
    written = []
    summary = load_summary(results, models) if {"latency", "throughput", "resources"} & set(kinds) else None
    builders = {
        "latency": lambda: figures.build_latency_figure(summary, looks, style),
        "throughput": lambda: figures.build_throughput_figure(summary, looks, style),
        "resources": lambda: figures.build_resources_figure(summary, looks, style),
        "coldstart": lambda: figures.build_coldstart_figure(load_coldstart(results, models), looks, style),
    }
    for kind in figures.OVERVIEW_KINDS:
        if kind in kinds:
            written += figures.save_figure(builders[kind](), out / kind, style)
    return written


def draw_model(results: Path, model: str, style: Style, out: Path) -> list[Path]:
    summary = load_summary(results, [model])
    if summary.empty:  # it fits in its device's memory at no batch size (load_summary checked)
        return figures.save_figure(unfit_figure(model, style), out / model / "distribution", style)
    latencies = load_latencies(results, model, summary["batch_size"])
    fig = figures.build_distribution_figure(model, latencies, summary, style)
    return figures.save_figure(fig, out / model / "distribution", style)


def unfit_figure(model: str, style: Style):
    """The distribution figure's place for a model with no latencies on its device: it says why."""
    fig = figures.new_figure(style)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{model}: does not fit in this device's memory at any batch size\n(report.md: Device)",
            ha="center", va="center", transform=ax.transAxes, gid=f"unfit:{model}")  # fmt: skip
    return fig


def from_config(paths: list[str], results: Path) -> tuple[Style, list[str], list[str]]:
    """The style, every configured model, and those of them with results under ``results``.

    The files are merged and their models read as the workflow does, but not checked
    against this machine: plotting needs no model, server or network.
    """
    config = settings.with_models(settings.read_config_files(paths))
    configured = list(config.get("models") or {})
    if not configured:
        raise ServeprofError(
            f"{' '.join(paths)} configures no models", "pass the workflow's config/config.yaml (and your --configfile)"
        )
    profiled = [model for model in configured if (results / model / "summary.csv").is_file()]
    return settings.style(config.get("plots")), configured, profiled


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof plot", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--results", type=Path, required=True, help="the run's results folder, e.g. workload/profiling")
    parser.add_argument("--models", nargs="+", help="the profiled models to draw (required for the overview figures)")
    parser.add_argument(
        "--all-models", nargs="+",
        help="every configured model; colours follow their sorted order so a model keeps its colour in every figure (default: --models)",
    )  # fmt: skip
    parser.add_argument(
        "--style", help="the config's plots: block as JSON, or a JSON file's path (default: the schema defaults)"
    )
    parser.add_argument(
        "--config", nargs="+", metavar="CONFIG",
        help="the workflow's config file(s): plots: gives the style, models: the colour order (--all-models) and, "
             "of those with results, the models to draw (--models); explicit flags win",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. reports/figures")
    parser.add_argument("--only", help=f"comma-separated figure kinds to draw: {', '.join(KINDS)} (default: all)")
    parser.add_argument("--model", help="draw only this model's per-model figures (distribution) into OUT/MODEL/")
    args = parser.parse_args(argv)

    style = load_style(args.style)
    if args.config:
        configured_style, configured, profiled = from_config(args.config, args.results)
        style = style if args.style else configured_style
        args.all_models = args.all_models or configured
        args.models = args.models or profiled
    kinds = parse_kinds(args.only)
    overview = [kind for kind in kinds if kind in figures.OVERVIEW_KINDS]
    if args.model is not None:
        if args.only is not None and overview:
            raise ServeprofError(
                f"--model {args.model} draws per-model figures, but --only asks for {', '.join(overview)}",
                f"drop --model to draw {', '.join(overview)}, or use --only {','.join(figures.PER_MODEL_KINDS)}",
            )
        written = draw_model(args.results, args.model, style, args.out)
    else:
        if not args.models:
            raise ServeprofError(
                "no models to draw",
                "pass --models K1 K2 ... (the profiled models), or --model K for one model's figures",
            )
        models = list(dict.fromkeys(args.models))
        all_models = list(dict.fromkeys([*(args.all_models or []), *models]))
        written = draw_overview(args.results, models, all_models, overview, style, args.out)
        if "distribution" in kinds:
            for model in models:
                written += draw_model(args.results, model, style, args.out)
    print(f"wrote {len(written)} figure files under {args.out}")
    return 0
