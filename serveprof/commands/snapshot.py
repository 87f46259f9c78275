"""``serveprof snapshot NAME``: keep this run's results as runs/NAME/ without re-measuring.

It copies (or, with --link, hard-links) every result under workload/ and the models'
acquisition statuses into runs/NAME/, with a snapshot.json saying when and from where.
It never overwrites a kept run unless --replace is given. Compare kept runs with
``serveprof compare NAME1 NAME2``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.compare.runs import RUNS_DIR, snapshot


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof snapshot", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("name", help="the run's name, e.g. tf-2.21-baseline (letters, digits, '.', '_', '-')")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=Path("."),
        help="the project folder holding workload/ (default: here), or a workload/profiling folder",
    )
    parser.add_argument("--runs-dir", type=Path, default=RUNS_DIR, help=f"where runs are kept (default {RUNS_DIR})")
    parser.add_argument(
        "--link",
        action="store_true",
        help="hard-link the files instead of copying (safe: results are replaced by rename, never edited)",
    )
    parser.add_argument("--replace", action="store_true", help="overwrite a kept run of the same name")
    parser.add_argument("--note", help="a sentence kept with the run (what changed, why it was kept)")
    args = parser.parse_args(argv)
    target = snapshot(args.name, args.source, args.runs_dir, link=args.link, replace=args.replace, note=args.note)
    print(f"kept {args.source} as {target}")
    return 0
