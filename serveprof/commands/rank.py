"""``serveprof rank``: rank the models per device by latency and peak memory, and show where the order flips.

Reads each device's results folder (summary.csv, and provenance.json for the repeats'
intervals and what did not fit) and writes ranking.md, ranking.csv and flips.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.atomic import atomic_write_text
from serveprof.commands.arguments import name_value_pairs
from serveprof.errors import ServeprofError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof rank", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument(
        "--devices",
        nargs="+",
        required=True,
        metavar="DEVICE=FOLDER",
        help="each device's results folder, in the order to show them, e.g. host=workload/profiling "
        "edge=workload/devices/edge/profiling",
    )
    parser.add_argument("--models", nargs="+", required=True, help="the models to rank (those profiled)")
    parser.add_argument("--out", type=Path, required=True, help="folder for ranking.md, ranking.csv, flips.csv")
    args = parser.parse_args(argv)
    devices = {
        name: Path(folder)
        for name, folder in name_value_pairs(args.devices, "--devices", "host=workload/profiling").items()
    }
    missing = [f"{name} ({folder})" for name, folder in devices.items() if not folder.is_dir()]
    if missing:
        raise ServeprofError(f"no results folder for device(s) {', '.join(missing)}", "run the workflow for them first")

    from serveprof.report.ranking import rank, ranking_markdown

    ranking, flipped = rank(devices, list(dict.fromkeys(args.models)))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "ranking.csv", ranking.to_csv(index=False, float_format="%.10g"))
    atomic_write_text(args.out / "flips.csv", flipped.to_csv(index=False))
    atomic_write_text(args.out / "ranking.md", ranking_markdown(ranking, flipped))
    print(f"ranked {ranking['model'].nunique()} model(s) on {len(devices)} device(s); {len(flipped)} flip(s)")
    return 0
