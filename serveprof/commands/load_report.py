"""``serveprof load-report``: the load figures and the best configuration under the SLO, from results only.

Writes, under ``--out`` (reports/load): ``summary.csv`` (every model's points),
``best.csv`` and ``best.md``, and per model ``<model>/latency_throughput.<format>``,
``<model>/batching_heatmap.<format>`` (with a batching grid) and
``<model>/batching_parameters.txt``. It never measures.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

from serveprof.atomic import atomic_write_text
from serveprof.commands.arguments import load_style, log
from serveprof.errors import ServeprofError
from serveprof.load.figures import build_heatmap, build_latency_throughput
from serveprof.load.report import best_markdown, best_table, summaries_of
from serveprof.load.results import read_point
from serveprof.report.figures import save_figure


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof load-report", description=__doc__.splitlines()[0])
    parser.add_argument("--summaries", nargs="+", type=Path, required=True, help="workload/load/<model>/summary.csv")
    parser.add_argument("--points-dir", type=Path, default=Path("workload/load"), help="where the points' JSON are")
    parser.add_argument("--slo-p99-ms", type=float, help="the SLO line and the best table's bound (load.slo_p99_ms)")
    parser.add_argument("--heatmap", action="store_true", help="draw the batching heatmap (the config has a grid)")
    parser.add_argument("--style", help="the plots: block as JSON, or a JSON file")
    parser.add_argument("--out", type=Path, default=Path("reports/load"))
    args = parser.parse_args(argv)
    if args.slo_p99_ms is not None and not args.slo_p99_ms > 0:
        raise ServeprofError(f"--slo-p99-ms {args.slo_p99_ms:g} is not positive", "give the p99 bound in ms, above 0")
    style = load_style(args.style)
    # The HTML report embeds the PNG, so it is drawn whatever the configured formats.
    style = dataclasses.replace(style, formats=tuple(dict.fromkeys((*style.formats, "png"))))
    summaries = summaries_of(args.summaries)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "summary.csv", pd.concat(summaries.values()).to_csv(index=False))
    table = best_table(summaries, args.points_dir, args.slo_p99_ms, args.out)
    atomic_write_text(args.out / "best.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "best.md", best_markdown(table, args.slo_p99_ms))
    for model, summary in summaries.items():
        (args.out / model).mkdir(parents=True, exist_ok=True)
        save_figure(
            build_latency_throughput(model, summary, args.slo_p99_ms, style),
            args.out / model / "latency_throughput",
            style,
        )
        if args.heatmap:
            documents = {
                scenario: read_point(args.points_dir / model / scenario / f"{rows['point'].iloc[0]}.json")
                for scenario, rows in summary.groupby("scenario")
            }
            save_figure(build_heatmap(model, summary, documents, style), args.out / model / "batching_heatmap", style)
    log("load-report", f"{len(summaries)} model(s) in {args.out}")
    return 0
