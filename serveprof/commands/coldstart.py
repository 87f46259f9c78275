"""``serveprof coldstart``: how long a model takes to load, and its first inference at batch 1."""

from __future__ import annotations

import argparse
from pathlib import Path

from serveprof.commands.arguments import add_client_flags, add_server_flags, log, server_and_input
from serveprof.errors import ServeprofError
from serveprof.launch import terminate_on_sigterm
from serveprof.measure.coldstart import cold_start
from serveprof.measure.result_files import write_coldstart


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    add_server_flags(parser)
    add_client_flags(parser)
    parser.add_argument("--out", type=Path, required=True, help="coldstart.csv to write")
    args = parser.parse_args(argv)
    if not args.model_base_path:
        raise ServeprofError(
            "coldstart needs --model-base-path: it launches the server itself",
            "pass --model-base-path data/model/inference/<model>",
        )
    server, input_settings = server_and_input(args)
    with terminate_on_sigterm():
        row = cold_start(
            args.model,
            args.model_base_path,
            server,
            input_settings,
            args.protocol,
            args.server_log,
            args.type,
            args.transport,
        )
    write_coldstart(args.out, row)
    log("coldstart", f"{args.model}: load {row['load_ms']:.1f} ms, first inference {row['first_infer_ms']:.1f} ms")
    return 0
