"""Do back-to-back runs of the same workload agree? p50 CV per cell, and what ``compare`` flags between runs.

A small workload (a sub-millisecond model and a MobileNetV2 at 96 × 96, three batch
sizes each, every batch size on a fresh server as the workflow measures it) runs
``--rounds`` times back to back under each condition, the conditions alternating
within each round, so a machine that gets busier hits them all alike:

- ``default``: the schema's defaults;
- ``pinned``: the client on one core, the server on the others (``measure.client_cpus``);
- ``gc``: Python's garbage collector left on in the timed loop (the default turns it off).
- ``awake``: every CPU kept awake by a SCHED_IDLE spinner during each series (``measure.keep_awake``).

For each condition it prints, per cell (model, batch size), the p50 of each round, its
coefficient of variation (sample std / mean), the disturbance flags, and how many
series ``serveprof compare`` (default 5 % threshold) calls a regression or an
improvement between every pair of rounds: with nothing changed, each such verdict is a
false alarm. The goal (issue 17): CV under 3 % and no verdicts.

Run (the models are built once into --work and reused):

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_repeatability.py [--rounds 3]
        [--conditions default,pinned,gc,awake] [--work /tmp/serveprof-repeatability] [--scale 5 --warmup-requests 200]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVEPROF = [sys.executable, "-m", "serveprof"]
# model -> (batch sizes, timed requests): each series takes a few seconds here.
WORKLOAD = {
    "tiny": ([1, 8, 32], 1000),
    "mobilenet": ([1, 4], 200),
}
MOBILENET = {"source": "keras", "type": "classification", "application": "MobileNetV2", "input_size": [96, 96]}
CONDITIONS = {
    "default": [],
    "pinned": ["--client-cpus", "0"],
    "gc": ["--keep-gc"],
    "awake": ["--keep-awake"],
}


def run(command: list[str], log: Path | None = None) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    with open(log or os.devnull, "ab") as out:
        subprocess.run(command, check=True, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def build_models(work: Path) -> dict[str, Path]:
    """Model base paths and acquisition statuses, built once."""
    models = work / "models"
    tiny = models / "tiny"
    if not (tiny / "1").is_dir():
        code = "import sys; from tests.fixtures.tiny_models import export_tiny_classifier; export_tiny_classifier(sys.argv[1])"
        run([sys.executable, "-c", code, str(tiny / "1")])
    mobilenet = models / "mobilenet"
    status = models / "mobilenet.json"
    if not (mobilenet / "1").is_dir():
        spec = json.dumps({**MOBILENET, "weights": "random"})
        run([*SERVEPROF, "acquire", "--model", "mobilenet", "--spec", spec, "--out", str(status)])
        run([*SERVEPROF, "export", "--model", "mobilenet", "--spec", spec, "--acquired", str(status),
             "--out", str(mobilenet / "1")])  # fmt: skip
    tiny_status = models / "tiny.json"
    if not tiny_status.is_file():
        tiny_status.write_text(
            json.dumps({"model": "tiny", "status": "ok", "source": "saved_model", "weights": "saved_model"})
        )
    return {"tiny": tiny, "mobilenet": mobilenet}


def measure(
    work: Path,
    condition: str,
    round_: int,
    bases: dict[str, Path],
    scale: float = 1.0,
    warmup: int | None = None,
    repeats: int = 1,
) -> Path:
    """One run of the workload under ``condition``: a results folder compare can read. ``scale`` multiplies
    the timed requests; ``warmup`` sets the warm-up requests (the schema's default when None). With
    ``repeats`` R > 1 every cell is measured R times, each on a fresh server, and folded as the workflow
    folds ``measure.repeats`` (``serveprof fold``)."""
    results = work / "runs" / condition / f"r{round_}" / "workload" / "profiling"
    shutil.rmtree(results, ignore_errors=True)  # an earlier run's files (other repeats) must not mix in
    log = work / "logs" / f"{condition}-r{round_}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    for model, (batches, requests) in WORKLOAD.items():
        out = results / model
        numbers = list(range(1, repeats + 1)) if repeats > 1 else [None]
        for number in numbers:
            command = [*SERVEPROF, "measure", "--model", model, "--model-base-path", str(bases[model]),
                       "--requests", str(round(requests * scale)), "--max-seconds", "30",
                       "--out-dir", str(out if number is None else out / "repeats" / f"r{number}"),
                       "--server", json.dumps({"backend": "embedded"}), *CONDITIONS[condition]]  # fmt: skip
            if number is not None:
                command += ["--repeat", str(number)]
            if warmup is not None:
                command += ["--warmup-requests", str(warmup)]
            for batch in batches:
                command += ["--batch-size", str(batch)]
            run(command, log)
        if repeats > 1:
            for batch in batches:
                folder = [out / "repeats" / f"r{number}" for number in numbers]
                run([*SERVEPROF, "fold", "--stats", *(str(one / "stats" / f"b{batch}.json") for one in folder),
                     "--latencies", *(str(one / f"{model}-b{batch}.csv") for one in folder),
                     "--out-latencies", str(out / f"{model}-b{batch}.csv"),
                     "--out-stats", str(out / "stats" / f"b{batch}.json")], log)  # fmt: skip
        stats = [str(out / "stats" / f"b{batch}.json") for batch in batches]
        run([*SERVEPROF, "aggregate", "--model", model, "--stats", *stats,
             "--acquired", str(work / "models" / f"{model}.json"), "--config-hash", condition, "--out-dir", str(out)],
            log)  # fmt: skip
    return results


def p50s(results: Path) -> dict[tuple[str, int], tuple[float, bool, float | None]]:
    """(model, batch) -> (p50 ms, flagged as disturbed, the CV of its repeats' p50s or None)."""
    cells = {}
    for model, (batches, _) in WORKLOAD.items():
        for batch in batches:
            doc = json.loads((results / model / "stats" / f"b{batch}.json").read_text())
            flagged = bool((doc.get("disturbance") or {}).get("flagged"))
            cells[(model, batch)] = (doc["stats"]["p50_ms"], flagged, (doc.get("repeats") or {}).get("p50_cv_pct"))
    return cells


def false_alarms(runs: list[Path]) -> list[str]:
    from serveprof.compare.changes import IMPROVEMENT, REGRESSION
    from serveprof.compare.comparison import compare_trees
    from serveprof.compare.trees import read_tree

    found = []
    for (i, base), (j, new) in itertools.combinations(enumerate(runs, 1), 2):
        comparison = compare_trees(read_tree(base), read_tree(new))
        for _, row in comparison.rows.iterrows():
            if row["verdict"] in (REGRESSION, IMPROVEMENT):
                found.append(f"r{i}→r{j} {row['series']}: {row['verdict']} (p50 {row['p50_change_pct']:+.1f} %)")
    return found


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conditions", default=",".join(CONDITIONS))
    parser.add_argument("--work", type=Path, default=Path("/tmp/serveprof-repeatability"))
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every cell's timed requests")
    parser.add_argument("--warmup-requests", type=int, help="warm-up requests per series (default: the schema's)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="measure every cell this many times, each on a fresh server (measure.repeats)",
    )
    args = parser.parse_args()
    conditions = args.conditions.split(",")
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        parser.error(f"unknown condition(s) {sorted(unknown)}; known: {', '.join(CONDITIONS)}")
    bases = build_models(args.work)
    print(f"load average before: {load()}  ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", flush=True)
    runs: dict[str, list[Path]] = {condition: [] for condition in conditions}
    for round_ in range(1, args.rounds + 1):
        # Alternate the order, so no condition always runs first (or last) in a round.
        order = conditions if round_ % 2 else conditions[::-1]
        for condition in order:
            started = time.monotonic()
            runs[condition].append(
                measure(args.work, condition, round_, bases, args.scale, args.warmup_requests, args.repeats)
            )
            print(f"round {round_} {condition}: {time.monotonic() - started:.0f} s, load {load()}", flush=True)
    print(f"load average after: {load()}\n")
    for condition in conditions:
        cells = [p50s(results) for results in runs[condition]]
        print(f"## {condition}\n")
        print(
            "| cell | "
            + " | ".join(f"p50 r{i} (ms)" for i in range(1, len(cells) + 1))
            + " | CV | disturbed | CV of the repeats' p50s within a run, median |"
        )
        print("| --- |" + " --- |" * (len(cells) + 3))
        cvs = []
        for key in cells[0]:
            values = [cell[key][0] for cell in cells]
            cv = 100 * statistics.stdev(values) / statistics.fmean(values) if len(values) > 1 else 0.0
            cvs.append(cv)
            flagged = sum(cell[key][1] for cell in cells)
            within = [cell[key][2] for cell in cells if cell[key][2] is not None]
            spread = f"{statistics.median(within):.1f} %" if within else "n/a"
            print(
                f"| {key[0]} b{key[1]} | "
                + " | ".join(f"{v:.3f}" for v in values)
                + f" | {cv:.1f} % | {flagged} | {spread} |"
            )
        alarms = false_alarms(runs[condition]) if len(cells) > 1 else []
        print(f"\nCV median {statistics.median(cvs):.1f} %, max {max(cvs):.1f} %; cells over 3 %: "
              f"{sum(cv > 3 for cv in cvs)} of {len(cvs)}; compare verdicts between rounds: {len(alarms)}")  # fmt: skip
        for alarm in alarms:
            print(f"  - {alarm}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
