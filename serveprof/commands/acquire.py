"""``serveprof acquire``: obtain a model's source and write its acquisition status.

Exit 0 with status ``unavailable`` (reason and fix) when the model cannot be
obtained, so the run goes on; with ``--strict`` that is an error and no status file
is written, so the rule fails and reruns next time.

The workflow acquires a model again only when its status file is gone (or its source
keys change), so a status that can change once the user acts (a tarball or weights
file staged, the network back) says in its fix to delete it.
"""

from __future__ import annotations

import argparse
import json

from serveprof.atomic import atomic_write_text
from serveprof.commands.arguments import model_spec
from serveprof.errors import ServeprofError
from serveprof.models.acquire import acquire
from serveprof.models.log import log


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof acquire", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model's key in the config")
    parser.add_argument("--spec", required=True, help="the model's config entry as JSON")
    parser.add_argument(
        "--download-dir", default="data/model/download", help="where zoo tarballs are downloaded or staged"
    )
    parser.add_argument("--out", required=True, help="the status file, data/model/acquired/<model>.json")
    parser.add_argument("--strict", action="store_true", help="fail (no status file) when the model cannot be obtained")
    parser.add_argument(
        "--allow-random-weights",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="build a Keras model with random weights when its ImageNet weights cannot be fetched",
    )
    args = parser.parse_args(argv)
    spec = model_spec(args.model, args.spec)
    status = acquire(args.model, spec, args.download_dir, args.allow_random_weights)
    if status["fix"]:
        status["fix"] += f"; then delete {args.out}, and the next run acquires {args.model} again"
    if status["status"] != "ok":
        if args.strict:
            raise ServeprofError(f"model {args.model} cannot be obtained: {status['reason']}", status["fix"])
        log("acquire", f"model {args.model} is unavailable: {status['reason']}\n  fix: {status['fix']}")
    else:
        log(
            "acquire",
            f"model {args.model}: ok, {status['weights']} weights"
            + (f" ({status['reason']})" if status["reason"] else ""),
        )
    atomic_write_text(args.out, json.dumps(status, indent=2) + "\n")
    return 0
