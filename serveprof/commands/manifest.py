"""``serveprof manifest``: the run's table of contents, ``workload/profiling/all``.

It lists which models were profiled (with their result files) and which were not
(with the reason and the fix), so a script can tell a finished run from a partial one.
``--run`` is the token of the run that wrote it; the workflow compares it on its next
run to notice that a file the manifest stands for has gone (rules/common.smk).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serveprof.atomic import atomic_write_text
from serveprof.errors import ServeprofError
from serveprof.measure.provenance import now_iso


def build_manifest(
    models: list[str], acquired_dir: Path, results_dir: Path | list[Path], run: str | None = None
) -> dict:
    """``results_dir`` is one results folder, or one per device (workload/profiling, workload/devices/<d>/profiling)."""
    folders = [results_dir] if isinstance(results_dir, Path) else list(results_dir)
    profiled, not_profiled = {}, {}
    for model in models:
        status = json.loads((acquired_dir / f"{model}.json").read_text())
        if status["status"] == "ok":
            profiled[model] = sorted(
                str(path) for folder in folders for path in (folder / model).rglob("*") if path.is_file()
            )
        else:
            not_profiled[model] = {"reason": status.get("reason"), "fix": status.get("fix")}
    reports = [f"reports/{report_segment(folder)}report.md" for folder in folders]
    manifest = {
        "generated_at": now_iso(),
        "run": run,
        "profiled": profiled,
        "not_profiled": not_profiled,
        "report": reports[0],
    }
    if len(folders) > 1 or reports[0] != "reports/report.md":
        manifest["reports"] = reports  # one per device
    return manifest


def report_segment(results: Path) -> str:
    """Where a results folder's report goes under reports/: "" for workload/profiling, "devices/<d>/" for a device's."""
    parts = results.parts
    return f"{'/'.join(parts[-3:-1])}/" if len(parts) >= 3 and parts[-3] == "devices" else ""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof manifest", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--acquired-dir", type=Path, required=True)
    parser.add_argument("--results", type=Path, nargs="+", required=True, help="the results folder of each device")
    parser.add_argument("--run", help="the token of the run that writes it (the workflow's)")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail, writing nothing, when a model was not profiled (the config's strict: true)",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    manifest = build_manifest(args.models, args.acquired_dir, args.results, args.run)
    if args.strict and manifest["not_profiled"]:
        listing = "\n  - ".join(
            f"{model}: {why['reason']}\n    fix: {why['fix']}" for model, why in manifest["not_profiled"].items()
        )
        raise ServeprofError(
            f"strict is true, and {len(manifest['not_profiled'])} model(s) were not profiled:\n  - {listing}",
            "act on each fix above, or set strict: false to have such models only reported",
        )
    atomic_write_text(args.out, json.dumps(manifest, indent=2) + "\n")
    print(f"profiled: {', '.join(manifest['profiled']) or 'none'}")
    for model, why in manifest["not_profiled"].items():
        print(f"not profiled: {model}: {why['reason']} (fix: {why['fix']})")
    return 0
