"""The ``serveprof`` command: one entry point, one module per subcommand (serveprof/commands/).

Subcommand modules are imported only when chosen, so ``serveprof plot`` or
``serveprof --help`` never pays for importing TensorFlow.
"""

from __future__ import annotations

import importlib
import os
import sys

from serveprof.errors import ServeprofError

# name -> (module exposing ``main(argv) -> int``, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serveprof.server.main", "run the embedded TF-Serving-compatible model server"),
    "measure": ("serveprof.commands.measure", "measure latency per batch size against a served model"),
    "coldstart": ("serveprof.commands.coldstart", "measure a model's cold start (load, first inference)"),
    "acquire": ("serveprof.commands.acquire", "download or locate a model's source (tarball, weights, SavedModel)"),
    "export": ("serveprof.commands.export", "export an acquired model as a batchable SavedModel"),
    "load": ("serveprof.commands.load", "load a served model: one closed- or open-loop point, windows until stable"),
    "load-summary": ("serveprof.commands.load_summary", "one row per load point of a model (summary.csv)"),
    "load-report": (
        "serveprof.commands.load_report",
        "load figures and the best configuration under the SLO, from results (never measures)",
    ),
    "rank": ("serveprof.commands.rank", "rank the models per device by latency and peak memory, and show flips"),
    "fold": ("serveprof.commands.fold", "fold a (model, batch)'s repeats into its latency file and stats"),
    "export-variant": (
        "serveprof.commands.export_variant",
        "build a model variant (fp16, bf16, int8, frozen, xla, tftrt) from its fp32 export",
    ),
    "accuracy": ("serveprof.commands.accuracy", "compare a variant's served answers with fp32's on seeded inputs"),
    "variants-report": (
        "serveprof.commands.variants_report",
        "tables of throughput per model and variant, speed-up against accuracy, variants not built",
    ),
    "profile-layers": (
        "serveprof.commands.profile_layers",
        "per-op, per-layer and per-block time of a model from its own Session's traces",
    ),
    "aggregate": ("serveprof.commands.aggregate", "combine per-batch results into the per-model CSVs"),
    "tables": ("serveprof.commands.tables", "write the markdown report and its tables from result CSVs"),
    "plot": ("serveprof.commands.plot", "draw the figures from existing result CSVs (never measures)"),
    "manifest": ("serveprof.commands.manifest", "write workload/profiling/all: what was profiled and what was not"),
    "check-config": ("serveprof.commands.check_config", "validate a config file and explain every problem"),
    "compare": (
        "serveprof.commands.compare",
        "compare two runs: latency changes with intervals, regressions, what differs",
    ),
    "snapshot": ("serveprof.commands.snapshot", "keep a run's results as runs/<name>/ without re-measuring"),
    "calibrate": (
        "serveprof.commands.calibrate",
        "fit on-device measurements to profiled results and predict the rest",
    ),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: serveprof <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `serveprof <command> --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from serveprof import __version__

        print(f"serveprof {__version__}")
        return 0
    # TensorFlow's INFO/WARNING chatter (CUDA probing, oneDNN notes) buries the lines a
    # user needs in every job log; errors still show. Setting the variable overrides this.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"serveprof: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except ServeprofError as error:
        print(f"serveprof {name}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
