"""``serveprof measure``: latency per batch size against a served model (protocol: docs/measurement.md).

With ``--model-base-path`` and ``--server`` each batch size gets a freshly launched
server; with ``--address`` it runs against a server that is already up (the stats
then say the model was not freshly loaded).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from serveprof.config import load_schema
from serveprof.errors import ServeprofError
from serveprof.launch import terminate_on_sigterm
from serveprof.measure.inputs import AUTO, MODEL_TYPES, InputSettings, input_defaults, model_type_of
from serveprof.measure.protocol import ProtocolSettings, measure_series
from serveprof.measure.provenance import host_provenance
from serveprof.measure.resources import GpuProbe, detect_gpu_probe
from serveprof.measure.result_files import write_measurement
from serveprof.measure.session import PROTOCOLS, TRANSPORTS, Endpoint, external, launched


def config_defaults(block: str) -> dict:
    """The schema's defaults for one config block: the CLI's defaults are the config's."""
    properties = load_schema()["properties"][block]["properties"]
    return {key: node["default"] for key, node in properties.items() if "default" in node}


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def log(message: str) -> None:
    print(f"serveprof measure: {message}", file=sys.stderr, flush=True)


def parse_json_flag(text: str, flag: str, example: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ServeprofError(f"{flag} is not valid JSON ({error}): {text!r}", f"pass {flag} as a JSON object, e.g. {example}") from None
    if not isinstance(value, dict):
        raise ServeprofError(f"{flag} must be a JSON object, got {text!r}", f"pass {flag} as a JSON object, e.g. {example}")
    return value


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-base-path", help="directory of the model's numeric versions (launch a server for it)")
    parser.add_argument("--server", default="{}", help="the config's server: block as JSON (default: backend auto)")
    parser.add_argument("--server-log", help="file for the launched server's output")
    parser.add_argument("--input", default=json.dumps(input_defaults()),
                        help='JSON: {"kind": "auto"|"random"|"zeros"|"images", "seed": 0, "image_dir": null, "image_size": [H, W]}; '
                             "missing keys take the config's defaults (default: %(default)s)")
    parser.add_argument("--type", choices=(AUTO, *MODEL_TYPES), default=AUTO,
                        help="the model's type, which resolves --input kind auto: images for detection, random for "
                             "classification; auto (default) reads it from the served signature (detection when it "
                             "has the Object Detection API's outputs, e.g. detection_boxes)")


def add_client_flags(parser: argparse.ArgumentParser, defaults: dict) -> None:
    """How the client talks to the server: ``measure.protocol`` and ``measure.transport``."""
    parser.add_argument("--protocol", choices=PROTOCOLS, default=defaults["protocol"])
    parser.add_argument("--transport", choices=TRANSPORTS, default=defaults["transport"],
                        help="builtin: serveprof's own HTTP/2 and HTTP/1.1 connections (least client CPU); "
                             "library: grpcio for gRPC, requests for REST (measure.transport; default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    defaults = config_defaults("measure")
    parser = argparse.ArgumentParser(prog="serveprof measure", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name the server serves (and the result files' prefix)")
    parser.add_argument("--batch-size", type=int, action="append", required=True, help="batch size; repeat for several")
    add_client_flags(parser, defaults)
    parser.add_argument("--address", help="HOST:PORT of a running server (its REST port with --protocol rest)")
    parser.add_argument("--pid", type=int, help="with --address: the server's pid, to sample its CPU and memory")
    add_server_flags(parser)
    parser.add_argument("--requests", type=int, default=defaults["requests"], help="timed requests (measure.requests)")
    parser.add_argument("--max-seconds", type=float, default=defaults["max_seconds"], help="time cap of the timed phase (measure.max_seconds)")
    parser.add_argument("--min-requests", type=int, default=defaults["min_requests"], help="timed requests made even past the cap (measure.min_requests)")
    parser.add_argument("--warmup-requests", type=int, default=defaults["warmup_requests"], help="unrecorded warm-up requests (measure.warmup_requests)")
    parser.add_argument("--warmup-max-seconds", type=float, default=defaults["warmup_max_seconds"], help="time cap of the warm-up (measure.warmup_max_seconds)")
    parser.add_argument("--resource-interval", type=float, default=defaults["resource_interval_s"], help="server CPU/RSS sampling period in s (measure.resource_interval_s)")
    parser.add_argument("--latencies", type=Path, help="latency file (one batch size only); default <out-dir>/<model>-b<N>.csv")
    parser.add_argument("--stats", type=Path, help="stats JSON (one batch size only); default <out-dir>/stats/b<N>.json")
    parser.add_argument("--out-dir", type=Path, help="result folder (default workload/profiling/<model>)")
    return parser


def result_paths(args, batch_size: int) -> tuple[Path, Path]:
    out_dir = args.out_dir or Path("workload/profiling") / args.model
    return (
        args.latencies or out_dir / f"{args.model}-b{batch_size}.csv",
        args.stats or out_dir / "stats" / f"b{batch_size}.json",
    )


def check_args(args) -> None:
    if (args.address is None) == (args.model_base_path is None):
        raise ServeprofError(
            "give either --address (a running server) or --model-base-path (a server to launch), not both or neither",
            "pass --model-base-path data/model/inference/<model> --server '{...}', or --address 127.0.0.1:8500",
        )
    if len(set(args.batch_size)) != len(args.batch_size) or min(args.batch_size) < 1:
        raise ServeprofError(f"batch sizes {args.batch_size} must be distinct whole numbers of 1 or more", "pass each --batch-size once, 1 or more")
    if len(args.batch_size) > 1 and (args.latencies or args.stats):
        raise ServeprofError("--latencies/--stats name one batch size's files, but several --batch-size were given", "use --out-dir for several batch sizes")


def endpoint_for(args, server_config: dict):
    if args.address:
        return external(args.model, args.address, args.protocol, pid=args.pid, transport=args.transport)
    return launched(args.model, args.model_base_path, server_config, args.protocol, log_path=args.server_log,
                    transport=args.transport)


def resolve_input(endpoint: Endpoint, batch_size: int, input_settings: InputSettings, model_type: str) -> tuple[InputSettings, dict]:
    """``--input`` kind auto made concrete by ``--type``, or by the served signature with ``--type auto``;
    also what the input description records about that choice."""
    if input_settings.kind != AUTO:
        return input_settings, {}
    source = "--type"
    if model_type == AUTO:
        try:
            outputs = endpoint.client.signature().outputs
        except Exception as error:
            raise endpoint.on_error(batch_size)(error, "reading the model's signature") from error
        model_type, source = model_type_of(outputs), "signature"
    return input_settings.resolved(model_type), {"requested_kind": AUTO, "model_type": model_type, "model_type_from": source}


def measure_batch(endpoint: Endpoint, batch_size: int, settings: ProtocolSettings, input_settings: InputSettings, gpu: GpuProbe | None,
                  model_type: str = AUTO) -> tuple[list[float], dict]:
    input_settings, resolution = resolve_input(endpoint, batch_size, input_settings, model_type)
    request, input_description = endpoint.prepare_request(batch_size, input_settings)
    input_description.update(resolution)
    on_error = endpoint.on_error(batch_size)
    latencies, fields = measure_series(endpoint.client.send, request, batch_size, settings, pid=endpoint.pid, on_error=on_error, log=log, gpu=gpu)
    return latencies, {"input": input_description, **fields}


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    server_config = parse_json_flag(args.server, "--server", '{"backend": "embedded"}')
    input_settings = InputSettings.from_json(args.input)
    settings = ProtocolSettings(
        requests=args.requests, max_seconds=args.max_seconds, min_requests=args.min_requests,
        warmup_requests=args.warmup_requests, warmup_max_seconds=args.warmup_max_seconds,
        resource_interval_s=args.resource_interval,
    )
    gpu = detect_gpu_probe()  # None without NVML or nvidia-smi: the GPU figures are then null
    provenance = host_provenance(gpu)
    with terminate_on_sigterm():
        for batch_size in args.batch_size:
            started_at = now_iso()
            log(f"{args.model}: batch size {batch_size} over {args.protocol} ({args.transport} transport)" + (f" at {args.address}" if args.address else " on a fresh server"))
            with endpoint_for(args, server_config) as endpoint:
                latencies, measured = measure_batch(endpoint, batch_size, settings, input_settings, gpu, args.type)
            document = {
                "model": args.model,
                "batch_size": batch_size,
                "protocol": args.protocol,
                "transport": args.transport,
                **{key: value for key, value in measured.items() if key != "input"},
                "server": {**endpoint.info, "pid": endpoint.pid},
                "input": measured["input"],
                "model_freshly_loaded": endpoint.freshly_loaded,
                "provenance": provenance,
                "started_at": started_at,
                "finished_at": now_iso(),
            }
            latencies_path, stats_path = result_paths(args, batch_size)
            # Written only now, whole: a job that dies earlier leaves no result behind.
            write_measurement(latencies_path, stats_path, latencies, document)
            log(f"wrote {latencies_path} and {stats_path}")
    return 0
