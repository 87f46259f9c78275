"""``serveprof export``: an acquired model as a batchable SavedModel in TF Serving's layout.

The version folder (``--out``, e.g. data/model/inference/<model>/1) is built beside
its final place and renamed there when complete, so TF Serving never sees half of it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from serveprof.commands.arguments import model_spec
from serveprof.errors import ServeprofError
from serveprof.measure.result_files import read_json
from serveprof.models.log import log
from serveprof.models.publish import building_dir


def export(spec: dict, acquired: dict, out: Path) -> None:
    source = spec["source"]
    with building_dir(out) as scratch:
        if source == "keras":
            from serveprof.models.keras_export import export_keras

            export_keras(spec["application"], spec.get("input_size"), acquired["weights"], scratch)
        elif source == "tf2_zoo":
            from serveprof.models.zoo_export import export_zoo

            export_zoo(acquired["artifact"], scratch)
        else:
            from serveprof.models.saved_model_import import export_saved_model

            export_saved_model(acquired["artifact"], scratch, spec.get("signature"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model's key in the config")
    parser.add_argument("--spec", required=True, help="the model's config entry as JSON")
    parser.add_argument("--acquired", required=True, type=Path, help="data/model/acquired/<model>.json")
    parser.add_argument("--out", required=True, type=Path, help="the version folder, data/model/inference/<model>/1")
    args = parser.parse_args(argv)
    spec = model_spec(args.model, args.spec)
    acquired = read_json(args.acquired, "acquisition status")
    if acquired.get("status") != "ok":
        raise ServeprofError(f"model {args.model} was not acquired: {acquired.get('reason')}",
                             acquired.get("fix") or f"rerun `serveprof acquire` for {args.model}")
    if acquired.get("source") != spec["source"]:
        raise ServeprofError(f"{args.acquired} was acquired from source {acquired.get('source')!r}, the spec says {spec['source']!r}",
                             f"delete {args.acquired} and rerun the acquisition")
    started = time.monotonic()
    export(spec, acquired, args.out)
    log("export", f"model {args.model} exported to {args.out} in {time.monotonic() - started:.1f} s")
    return 0
