"""``serveprof coldstart``: how long a model takes to load, and its first inference at batch 1."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from serveprof import settings
from serveprof.commands.arguments import (
    add_client_flags,
    add_device_flags,
    add_disturbance_flags,
    add_server_flags,
    device_of,
    disturbance_block,
    log,
    server_and_input,
)
from serveprof.errors import ServeprofError
from serveprof.launch import DoesNotFit, terminate_on_sigterm
from serveprof.measure.coldstart import cold_start
from serveprof.measure.result_files import write_coldstart


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    add_server_flags(parser)
    add_client_flags(parser)
    add_disturbance_flags(parser)
    add_device_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="coldstart.csv to write")
    args = parser.parse_args(argv)
    if not args.model_base_path:
        raise ServeprofError(
            "coldstart needs --model-base-path: it launches the server itself",
            "pass --model-base-path data/model/inference/<model>",
        )
    server, input_settings = server_and_input(args)
    device = device_of(args)
    disturbance = settings.disturbance_settings(disturbance_block(args))
    with terminate_on_sigterm():
        try:
            row = cold_start(
                args.model,
                args.model_base_path,
                server,
                input_settings,
                args.protocol,
                args.server_log,
                args.type,
                args.transport,
                disturbance,
                partial(log, "coldstart"),
                device,
            )
        except DoesNotFit as unfit:
            # The run goes on: the row's empty times say there was no cold start, the measurements say why.
            log("coldstart", f"{unfit.problem}\n  {args.model} does not fit in {unfit.memory}: no cold start")
            write_coldstart(args.out, {"model": args.model, "backend": unfit.backend})
            return 0
    write_coldstart(args.out, row)
    split = (
        f" (SavedModel load {row['server_load_ms']:.1f} ms, warm-up {row['warmup_ms']:.1f} ms of"
        f" {row['warmup_records']} records)"
        if row["server_load_ms"] is not None
        else ""
    )
    log(
        "coldstart",
        f"{args.model}: load {row['load_ms']:.1f} ms{split}, first inference {row['first_infer_ms']:.1f} ms"
        + (f"; disturbed: {row['disturbance_reasons']}" if row["disturbed"] else ""),
    )
    return 0
