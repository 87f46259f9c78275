"""``serveprof load``: one load point (closed- or open-loop, windows until stable) against a served model.

With ``--model-base-path`` and ``--server`` the point gets a freshly launched server
(with the ``--server`` block's batching, and TF Serving's metrics page on); with
``--address`` it loads a server that is already up. docs/load.md has the procedure.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from serveprof import settings
from serveprof.commands.arguments import (
    add_client_flags,
    add_disturbance_flags,
    add_server_flags,
    disturbance_block,
    endpoint_for,
    json_object,
    log,
    server_and_input,
)
from serveprof.errors import ServeprofError
from serveprof.launch import terminate_on_sigterm
from serveprof.launch.spec import METRICS_PATH
from serveprof.load.point import PointResult, measure_point
from serveprof.load.results import requests_text, write_point
from serveprof.load.scenarios import parse_point
from serveprof.measure.provenance import host_provenance, now_iso
from serveprof.measure.retry import retried


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="serveprof load", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model name the server serves")
    parser.add_argument("--scenario", required=True, help="closed, open, or closed-/open-<batching> (docs/load.md)")
    parser.add_argument("--point", required=True, help="c<clients> (closed loop) or r<requests/s> (open loop)")
    parser.add_argument(
        "--load",
        default="{}",
        help="the config's load: block as JSON (how the point is measured); missing keys take the defaults",
    )
    add_client_flags(parser)
    parser.add_argument("--address", help="HOST:PORT of a running server (its REST port with --protocol rest)")
    parser.add_argument("--pid", type=int, help="with --address: the server's pid, to sample its CPU and memory")
    parser.add_argument("--metrics-url", help="with --address: the server's Prometheus page, if it serves one")
    add_server_flags(parser)
    add_disturbance_flags(parser)
    parser.add_argument("--requests-out", type=Path, required=True, help="the per-request CSV to write")
    parser.add_argument("--summary-out", type=Path, required=True, help="the point's JSON to write")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if (args.address is None) == (args.model_base_path is None):
        raise ServeprofError(
            "give either --address (a running server) or --model-base-path (a server to launch), not both or neither",
            "pass --model-base-path data/model/inference/<model> --server '{...}', or --address 127.0.0.1:8500",
        )
    server, input_settings = server_and_input(args)
    block = json_object(args.load, "--load", '{"window_s": 5, "stability_pct": 10}')
    measure = settings.point_settings({key: value for key, value in block.items() if key in POINT_KEYS})
    point = parse_point(args.scenario, args.point, server.batching if args.model_base_path else None)
    disturbance = settings.disturbance_settings(disturbance_block(args))
    say = partial(log, "load")

    def attempt() -> tuple[dict, PointResult]:
        """The point on a fresh server (or again on the running one): its document, and its requests."""
        started_at = now_iso()
        # A point always reads the server's own latency and batching figures from its Prometheus page.
        with endpoint_for(args, server, metrics_path=METRICS_PATH) as endpoint:
            result = measure_point(
                endpoint, point, measure, input_settings, args.protocol, args.transport, say, args.type, disturbance
            )
        document = {
            "model": args.model,
            "protocol": args.protocol,
            "transport": args.transport,
            **result.document,
            "server": {**endpoint.info, "pid": endpoint.pid},
            "model_freshly_loaded": endpoint.freshly_loaded,
            "provenance": host_provenance(None),
            "started_at": started_at,
            "finished_at": now_iso(),
        }
        return document, result

    with terminate_on_sigterm():
        # A disturbed point is measured again, as a disturbed series is (measure.retry_disturbed).
        document, result = retried(
            attempt, lambda kept: kept[0]["disturbance"], disturbance, say, f"{args.model} {args.scenario}/{args.point}"
        )
    # Written only now, whole: a job that dies earlier leaves no result behind.
    write_point(
        args.requests_out, args.summary_out, requests_text(result.rows, result.statuses, result.start_ns), document
    )
    say(f"wrote {args.requests_out} and {args.summary_out}")
    return 0


# The load: keys that shape a point's measurement (the rest choose points or draw the report).
POINT_KEYS = (
    "batch_size",
    "arrival",
    "seed",
    "window_s",
    "window_requests",
    "stable_windows",
    "max_windows",
    "stability_pct",
    "warmup_s",
    "max_in_flight",
    "processes",
    "schedule_tolerance_ms",
    "resource_interval_s",
)
