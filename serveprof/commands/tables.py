"""``serveprof tables``: write reports/report.md and reports/tables/ from a run's result files."""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.atomic import atomic_open, atomic_write_text
from serveprof.report.document import build_report, models_frame
from serveprof.report.results import load_run
from serveprof.report.tables import not_profiled_table, result_tables


def write_tables(results: Path, acquired_dir: Path, models: list[str], out: Path) -> list[Path]:
    """Write the report and every table; return the paths written."""
    run = load_run(results, acquired_dir, models)
    tables_dir = out / "tables"
    written = []
    for table in [*result_tables(run), not_profiled_table(run)]:
        with atomic_open(tables_dir / f"{table.name}.csv", "w", encoding="utf-8", newline="") as handle:
            table.data.to_csv(handle, index=False, float_format="%.10g")
        atomic_write_text(tables_dir / f"{table.name}.md", f"### {table.title}\n\n{table.to_markdown()}")
        written += [tables_dir / f"{table.name}.csv", tables_dir / f"{table.name}.md"]
    with atomic_open(tables_dir / "models.csv", "w", encoding="utf-8", newline="") as handle:
        models_frame(run).to_csv(handle, index=False, float_format="%.10g")
    written.append(tables_dir / "models.csv")
    # The report last: its presence means every table beside it is complete.
    atomic_write_text(out / "report.md", build_report(run, str(results)))
    written.append(out / "report.md")
    return written


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof tables", description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("--results", type=Path, required=True, help="the run's results folder, e.g. workload/profiling")
    parser.add_argument(
        "--acquired-dir", type=Path, required=True, help="acquisition statuses, e.g. data/model/acquired"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        required=True,
        help="every configured model key; unavailable ones are listed as not profiled",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder, e.g. reports")
    args = parser.parse_args(argv)
    written = write_tables(args.results, args.acquired_dir, list(dict.fromkeys(args.models)), args.out)
    print(f"wrote {len(written)} files; report: {args.out / 'report.md'}")
    return 0
