"""``serveprof fold``: a cell's repeats -> its ``<model>-b<N>.csv`` and ``stats/b<N>.json`` (measure.repeats > 1)."""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof import settings
from serveprof.measure.repeats import fold
from serveprof.measure.result_files import read_json, read_latencies, write_measurement


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof fold", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--stats", type=Path, nargs="+", required=True, help="each repeat's stats JSON")
    parser.add_argument(
        "--latencies", type=Path, nargs="+", required=True, help="each repeat's latency file, in the same order"
    )
    parser.add_argument(
        "--max-cv-pct",
        type=float,
        default=settings.defaults("measure")["max_cv_pct"],
        help="flag the cell when the CV of its repeats' means is above this (measure.max_cv_pct; default %(default)s)",
    )
    parser.add_argument("--out-latencies", type=Path, required=True, help="the cell's <model>-b<N>.csv")
    parser.add_argument("--out-stats", type=Path, required=True, help="the cell's stats/b<N>.json")
    args = parser.parse_args(argv)
    documents = [read_json(path, "stats file") for path in args.stats]
    latencies = [read_latencies(path) for path in args.latencies]
    pooled, folded = fold(documents, latencies, args.max_cv_pct)
    write_measurement(args.out_latencies, args.out_stats, pooled, folded)
    block = folded["repeats"]
    cv = f"CV {block['cv_pct']:.2f} %" if block.get("cv_pct") is not None else "CV n/a"
    flag = " (flagged: above measure.max_cv_pct)" if block["flagged"] else ""
    print(f"{folded['model']} b{folded['batch_size']}: {block['count']} repeats, {len(pooled)} latencies, {cv}{flag}")
    return 0
