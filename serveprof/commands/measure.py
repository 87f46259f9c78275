"""``serveprof measure``: latency per batch size against a served model (procedure: docs/measurement.md).

With ``--model-base-path`` and ``--server`` each batch size gets a freshly launched
server; with ``--address`` it runs against a server that is already up (the stats
then say the model was not freshly loaded).
"""

from __future__ import annotations

import argparse
import dataclasses
from functools import partial
from pathlib import Path

from serveprof import settings
from serveprof.commands.arguments import (
    add_client_flags,
    add_device_flags,
    add_disturbance_flags,
    add_server_flags,
    cpu_list,
    device_of,
    disturbance_block,
    endpoint_for,
    log,
    server_and_input,
)
from serveprof.errors import ServeprofError
from serveprof.launch import DoesNotFit, terminate_on_sigterm
from serveprof.measure.device_result import device_fields, unfit_document
from serveprof.measure.procedure import measure_batch
from serveprof.measure.provenance import host_provenance, now_iso
from serveprof.measure.resources import detect_gpu_probe
from serveprof.measure.result_files import write_measurement
from serveprof.measure.retry import retried

# The measure: keys each flag sets, for the settings owner's checks and defaults.
PROCEDURE_FLAGS = {
    "requests": "requests",
    "max_seconds": "max_seconds",
    "min_requests": "min_requests",
    "warmup_requests": "warmup_requests",
    "warmup_max_seconds": "warmup_max_seconds",
    "resource_interval": "resource_interval_s",
    "client_cpus": "client_cpus",
    "keep_awake": "keep_awake",
}


def build_parser() -> argparse.ArgumentParser:
    defaults = settings.defaults("measure")
    parser = argparse.ArgumentParser(prog="serveprof measure", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name the server serves (and the result files' prefix)")
    parser.add_argument("--batch-size", type=int, action="append", required=True, help="batch size; repeat for several")
    add_client_flags(parser)
    parser.add_argument("--address", help="HOST:PORT of a running server (its REST port with --protocol rest)")
    parser.add_argument("--pid", type=int, help="with --address: the server's pid, to sample its CPU and memory")
    parser.add_argument(
        "--metrics-url",
        help="with --address: the server's Prometheus page (e.g. http://127.0.0.1:8501/monitoring/prometheus/metrics),"
        " for its own latency beside the client's",
    )
    add_server_flags(parser)
    add_device_flags(parser)
    parser.add_argument(
        "--repeat", type=int, help="which repeat of measure.repeats this series is (recorded in the stats JSON)"
    )
    parser.add_argument("--requests", type=int, default=defaults["requests"], help="timed requests (measure.requests)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=defaults["max_seconds"],
        help="time cap of the timed phase (measure.max_seconds)",
    )
    parser.add_argument(
        "--min-requests",
        type=int,
        default=defaults["min_requests"],
        help="timed requests made even past the cap (measure.min_requests)",
    )
    parser.add_argument(
        "--warmup-requests",
        type=int,
        default=defaults["warmup_requests"],
        help="unrecorded warm-up requests (measure.warmup_requests)",
    )
    parser.add_argument(
        "--warmup-max-seconds",
        type=float,
        default=defaults["warmup_max_seconds"],
        help="time cap of the warm-up (measure.warmup_max_seconds)",
    )
    parser.add_argument(
        "--resource-interval",
        type=float,
        default=defaults["resource_interval_s"],
        help="server CPU/RSS sampling period in s (measure.resource_interval_s)",
    )
    add_disturbance_flags(parser)
    parser.add_argument(
        "--client-cpus",
        type=cpu_list,
        default=defaults["client_cpus"],
        metavar="N[,N...]",
        help="pin the client to these CPUs and the server to the others; none: the kernel decides (measure.client_cpus)",
    )
    parser.add_argument(
        "--keep-awake",
        action=argparse.BooleanOptionalAction,
        default=defaults["keep_awake"],
        help="a SCHED_IDLE spinner on every CPU during each series, so none halts between requests (measure.keep_awake)",
    )
    parser.add_argument(
        "--keep-gc",
        action="store_true",
        help="leave Python's garbage collector on during the timed requests (benchmarks/bench_repeatability.py)",
    )
    parser.add_argument(
        "--latencies", type=Path, help="latency file (one batch size only); default <out-dir>/<model>-b<N>.csv"
    )
    parser.add_argument(
        "--stats", type=Path, help="stats JSON (one batch size only); default <out-dir>/stats/b<N>.json"
    )
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
        raise ServeprofError(
            f"batch sizes {args.batch_size} must be distinct whole numbers of 1 or more",
            "pass each --batch-size once, 1 or more",
        )
    if len(args.batch_size) > 1 and (args.latencies or args.stats):
        raise ServeprofError(
            "--latencies/--stats name one batch size's files, but several --batch-size were given",
            "use --out-dir for several batch sizes",
        )
    if args.repeat is not None and args.repeat < 1:
        raise ServeprofError(f"--repeat {args.repeat} is not a repeat number", "pass --repeat 1 or more")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    check_args(args)
    server, input_settings = server_and_input(args)
    block = {key: getattr(args, flag) for flag, key in PROCEDURE_FLAGS.items()}
    procedure = settings.procedure_settings({**block, **disturbance_block(args)})
    procedure = dataclasses.replace(procedure, keep_gc=args.keep_gc)
    device = device_of(args)
    gpu = detect_gpu_probe()  # None without NVML or nvidia-smi: the GPU figures are then null
    provenance = host_provenance(gpu)
    say = partial(log, "measure")
    with terminate_on_sigterm():
        for batch_size in args.batch_size:
            say(
                f"{args.model}: batch size {batch_size} over {args.protocol} ({args.transport} transport)"
                + (f" at {args.address}" if args.address else " on a fresh server")
            )

            def attempt(batch_size=batch_size) -> dict:
                """One series on a fresh server (or again on the running one): the stats JSON and latencies."""
                started_at = now_iso()
                with endpoint_for(args, server) as endpoint:
                    latencies, measured = measure_batch(
                        endpoint, batch_size, procedure, input_settings, gpu, say, args.type
                    )
                    limits = endpoint.limits()
                return {
                    "model": args.model,
                    "batch_size": batch_size,
                    "protocol": args.protocol,
                    "transport": args.transport,
                    **{key: value for key, value in measured.items() if key != "input"},
                    **device_fields(device, limits, args.repeat),
                    "server": {
                        **{key: value for key, value in endpoint.info.items() if key != "limits"},
                        "pid": endpoint.pid,
                    },
                    "input": measured["input"],
                    "model_freshly_loaded": endpoint.freshly_loaded,
                    "provenance": provenance,
                    "started_at": started_at,
                    "finished_at": now_iso(),
                    "latencies": latencies,
                }

            latencies_path, stats_path = result_paths(args, batch_size)
            started_at = now_iso()
            try:
                document = retried(
                    attempt,
                    lambda doc: doc["disturbance"],
                    procedure.disturbance,
                    say,
                    f"{args.model} batch {batch_size}",
                )
            except DoesNotFit as unfit:
                # A result, not a failure: the run goes on, and the report says it does not fit.
                say(f"{unfit.problem}\n  {args.model} at batch size {batch_size} does not fit in {unfit.memory}")
                base = {"model": args.model, "batch_size": batch_size, "protocol": args.protocol,
                        "transport": args.transport, **device_fields(device, None, args.repeat),
                        "server": {"backend": unfit.backend}, "provenance": provenance,
                        "started_at": started_at, "finished_at": now_iso()}  # fmt: skip
                write_measurement(latencies_path, stats_path, [], unfit_document(base, unfit.record(), unfit.limits))
                say(f"wrote {latencies_path} and {stats_path}")
                continue
            latencies = document.pop("latencies")
            # Written only now, whole: a job that dies earlier leaves no result behind.
            write_measurement(latencies_path, stats_path, latencies, document)
            say(f"wrote {latencies_path} and {stats_path}")
    return 0
