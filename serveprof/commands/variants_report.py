"""``serveprof variants-report``: throughput per model and variant, speed-up against accuracy, variants not built.

Reads result files only (serveprof/variants/report.py); writes variants.md,
throughput.csv, accuracy.csv and speedup.<format> (speed-up against the largest output
difference from fp32) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.commands.arguments import json_object, load_style, log
from serveprof.errors import ServeprofError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof variants-report", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--variants", required=True, help='JSON: {model: [variant, ...]}, e.g. \'{"m": ["fp32", "fp16"]}\''
    )
    parser.add_argument(
        "--results", type=Path, default=Path("workload"), help="the folder holding profiling/ and variants/"
    )
    parser.add_argument(
        "--statuses", type=Path, default=Path("data/model/variants"), help="the variants' export statuses"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/variants"))
    parser.add_argument("--style", default=None, help="the plots: block as JSON (or a JSON file) for the figure")
    args = parser.parse_args(argv)
    variants = json_object(args.variants, "--variants", '\'{"resnet": ["fp32", "fp16"]}\'')
    if not all(isinstance(names, list) for names in variants.values()):
        raise ServeprofError("--variants must map each model to a list of variant names", 'e.g. {"resnet": ["fp32"]}')
    from serveprof.variants.report import write

    written = write(args.results, args.statuses, variants, args.out, load_style(args.style))
    log("variants-report", f"wrote {', '.join(str(path) for path in written.values())}")
    return 0
