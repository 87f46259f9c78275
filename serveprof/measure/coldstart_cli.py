"""``serveprof coldstart``: how long a model takes to load, and its first inference at batch 1.

``load_ms`` runs from the server process's start to the model's AVAILABLE status (both
stamped by the launcher); ``first_infer_ms`` is the first request after that.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.launch import terminate_on_sigterm
from serveprof.measure.cli import add_client_flags, add_server_flags, config_defaults, parse_json_flag, resolve_input
from serveprof.measure.inputs import AUTO, InputSettings
from serveprof.measure.protocol import time_one
from serveprof.measure.result_files import write_coldstart
from serveprof.measure.session import launched


def cold_start(model: str, model_base_path: str, server_config: dict, input_settings: InputSettings, protocol: str,
               server_log: str | None, model_type: str = AUTO, transport: str = "builtin") -> dict:
    with launched(model, model_base_path, server_config, protocol, log_path=server_log, transport=transport) as endpoint:
        server_started_ns, available_ns = endpoint.started_ns, endpoint.available_ns
        input_settings, _ = resolve_input(endpoint, 1, input_settings, model_type)
        request, _ = endpoint.prepare_request(1, input_settings)
        on_error = endpoint.on_error(1)
        first_infer_ms = time_one(endpoint.client.send, request, on_error, "first request (first inference)")
    return {
        "model": model,
        "load_ms": (available_ns - server_started_ns) / 1e6,
        "first_infer_ms": first_infer_ms,
        "backend": endpoint.info.get("backend"),
        "backend_version": endpoint.info.get("version"),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof coldstart", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    add_server_flags(parser)
    add_client_flags(parser, config_defaults("measure"))
    parser.add_argument("--out", type=Path, required=True, help="coldstart.csv to write")
    args = parser.parse_args(argv)
    if not args.model_base_path:
        raise ServeprofError("coldstart needs --model-base-path: it launches the server itself", "pass --model-base-path data/model/inference/<model>")
    server_config = parse_json_flag(args.server, "--server", '{"backend": "embedded"}')
    with terminate_on_sigterm():
        row = cold_start(args.model, args.model_base_path, server_config, InputSettings.from_json(args.input), args.protocol,
                         args.server_log, args.type, args.transport)
    write_coldstart(args.out, row)
    print(f"serveprof coldstart: {args.model}: load {row['load_ms']:.1f} ms, first inference {row['first_infer_ms']:.1f} ms", file=sys.stderr)
    return 0
