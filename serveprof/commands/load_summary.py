"""``serveprof load-summary``: one row per load point of a model (workload/load/<model>/summary.csv)."""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.commands.arguments import log
from serveprof.load.results import read_point, summary_row, write_summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof load-summary", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--points", nargs="+", type=Path, required=True, help="the points' JSON files")
    parser.add_argument("--out", type=Path, required=True, help="summary.csv to write")
    args = parser.parse_args(argv)
    write_summary(args.out, [summary_row(args.model, read_point(path)) for path in args.points])
    log("load-summary", f"{args.model}: {len(args.points)} point(s) in {args.out}")
    return 0
