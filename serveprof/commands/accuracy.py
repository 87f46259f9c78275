"""``serveprof accuracy``: a variant's answers against fp32's, both served, on one seeded input set.

Launches a server for the fp32 model, asks it ``--samples`` inputs from the input
builder in batches of ``--batch-size``, then one for the variant (with the flags it
needs, ``--variant-flag``) on the same inputs, and writes the differences as JSON
(serveprof/variants/accuracy.py says what is compared).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serveprof.commands.arguments import add_client_flags, add_server_flags, log, server_and_input
from serveprof.errors import ServeprofError
from serveprof.measure.result_files import write_json


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model name both servers serve")
    parser.add_argument("--variant", required=True, help="the variant's name, for the result")
    parser.add_argument("--reference-base-path", required=True, help="the fp32 model's base path")
    parser.add_argument("--variant-flag", action="append", default=[], help="a server flag the variant needs")
    parser.add_argument("--samples", type=int, default=64, help="inputs in the compared set")
    parser.add_argument("--batch-size", type=int, default=8, help="items per request")
    parser.add_argument("--weights", default=None, help="the acquisition's weights (random ones are flagged)")
    parser.add_argument("--out", required=True, type=Path, help="the result JSON")
    add_server_flags(parser)
    add_client_flags(parser)
    args = parser.parse_args(argv)
    if not args.model_base_path:
        raise ServeprofError("--model-base-path is missing", "give the variant's model base path")
    if args.samples < 1 or args.batch_size < 1:
        raise ServeprofError("--samples and --batch-size must be at least 1", "give positive counts")
    server, inputs = server_and_input(args)
    from serveprof.variants.accuracy import measure

    result = measure(
        args.model,
        args.reference_base_path,
        args.model_base_path,
        server,
        tuple(args.variant_flag),
        inputs,
        samples=args.samples,
        batch_size=args.batch_size,
        protocol=args.protocol,
        transport=args.transport,
        model_type=args.type,
        weights=args.weights,
    )
    result = {"variant": args.variant, **result}
    write_json(args.out, result)
    log(
        "accuracy",
        f"{args.model} {args.variant}: {json.dumps({k: result.get(k) for k in ('classification', 'detection') if k in result})}",
    )
    return 0
