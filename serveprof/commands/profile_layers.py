"""``serveprof profile-layers``: where a served model's time goes, per op, layer and block, from its own Session.

Loads the SavedModel as the embedded server does and traces ``--iterations`` runs at
``--batch-size`` (after ``--warmup`` untraced ones) with TensorFlow's full tracing,
alternating with untraced runs to measure the tracing's own cost. Writes ops.csv,
layers.csv, blocks.csv, nodes.csv, breakdown.md and blocks.png into ``--out-dir``.
Never run it beside a timed measurement: it takes the cores it is given.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serveprof import settings
from serveprof.atomic import atomic_write_text
from serveprof.commands.arguments import json_object, log


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof profile-layers", description=__doc__.splitlines()[0])
    parser.add_argument("--model-base-path", required=True, type=Path, help="the model's base path (version 1 inside)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=25, help="untraced runs first (profile.warmup)")
    parser.add_argument("--iterations", type=int, default=300, help="traced runs (profile.iterations)")
    parser.add_argument("--top", type=int, default=20, help="rows of each table in breakdown.md")
    parser.add_argument("--input", default="{}", help="the measure.input block as JSON")
    parser.add_argument("--server", default="{}", help="the server: block as JSON (its thread counts are used)")
    parser.add_argument("--block-pattern", default=None, help="regex whose first group names a layer's block")
    parser.add_argument("--title", default=None)
    parser.add_argument("--out-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    inputs = settings.input_settings(json_object(args.input, "--input", '{"kind": "random", "seed": 0}'))
    server = settings.server_settings(json_object(args.server, "--server", '{"backend": "embedded"}'))
    from serveprof.profile.breakdown import markdown
    from serveprof.profile.figure import draw
    from serveprof.profile.run import profile
    from serveprof.server.servable import find_served_version

    _, version_dir = find_served_version(args.model_base_path, prefer_tflite=True)
    result = profile(
        version_dir,
        args.batch_size,
        inputs,
        warmup=args.warmup,
        iterations=args.iterations,
        intra_op_threads=server.intra_op_threads,
        inter_op_threads=server.inter_op_threads,
        block_pattern=args.block_pattern,
        log=lambda line: log("profile-layers", line),
    )
    title = args.title or f"{args.model_base_path} at batch {args.batch_size}"
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in ("ops", "layers", "blocks", "nodes"):
        atomic_write_text(out / f"{name}.csv", getattr(result, name).to_csv(index=False))
    atomic_write_text(out / "breakdown.md", markdown(result, title, args.top))
    draw(result, out / "blocks.png", title)
    summary = {
        "iterations": result.iterations,
        "warmup": result.warmup,
        "node_time_ms": result.total_ms,
        "wall_untraced_ms": result.wall_untraced_ms,
        "wall_traced_ms": result.wall_traced_ms,
        "tracing_overhead_pct": result.overhead_pct,
    }
    atomic_write_text(out / "profile.json", json.dumps(summary, indent=2) + "\n")
    log("profile-layers", f"wrote {out}: tracing overhead {result.overhead_pct:.1f} %")
    return 0
