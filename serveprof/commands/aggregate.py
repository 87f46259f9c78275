"""``serveprof aggregate``: one model's per-batch stats JSONs -> ``<model>.csv``, ``summary.csv``, ``provenance.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.measure.aggregate import aggregate


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument(
        "--stats", type=Path, nargs="+", required=True, help="stats/b<N>.json files, one per batch size"
    )
    parser.add_argument(
        "--latencies", type=Path, nargs="*", default=[], help="<model>-b<N>.csv files, checked against the stats"
    )
    parser.add_argument("--coldstart", type=Path, help="the model's coldstart.csv (checked, not copied)")
    parser.add_argument("--acquired", type=Path, required=True, help="data/model/acquired/<model>.json")
    parser.add_argument("--config-hash", required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    aggregate(args.model, args.stats, args.coldstart, args.acquired, args.config_hash, args.out_dir, args.latencies)
    print(f"{args.model}: aggregated {len(args.stats)} batch size(s) into {args.out_dir}")
    return 0
