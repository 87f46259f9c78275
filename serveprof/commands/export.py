"""``serveprof export``: an acquired model as a batchable SavedModel in TF Serving's layout.

The version folder (``--out``, e.g. data/model/inference/<model>/1) is built beside
its final place and renamed there when complete, so TF Serving never sees half of it.
Before that, with ``--warmup-batch-sizes``, warm-up records are written into it, and
every export ends with the servability check (servability.py): loaded as
tensorflow_model_server loads it, in a fresh process, one batch-2 request through
``serving_default``. If that fails, the export fails with the reason and nothing is
published.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from serveprof.commands.arguments import model_spec
from serveprof.errors import ServeprofError
from serveprof.measure.result_files import read_json
from serveprof.models.log import log, timed
from serveprof.models.publish import building_dir


def export(
    spec: dict,
    acquired: dict,
    out: Path,
    warmup_batch_sizes: list[int] | None = None,
    model_name: str = "default",
    warmup_input_shapes: dict[str, list[int]] | None = None,
) -> None:
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
        if warmup_batch_sizes:
            from serveprof.models.warmup_records import write_warmup_records

            with timed("export", f"writing warm-up records for batch sizes {warmup_batch_sizes}"):
                write_warmup_records(scratch, warmup_batch_sizes, model_name, input_shapes=warmup_input_shapes)
        from serveprof.models.servability import check_servable

        with timed("export", "servability check (Session loader, batch-2 request to serving_default, fresh process)"):
            check_servable(scratch, source)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof export", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model's key in the config")
    parser.add_argument("--spec", required=True, help="the model's config entry as JSON")
    parser.add_argument("--acquired", required=True, type=Path, help="data/model/acquired/<model>.json")
    parser.add_argument("--out", required=True, type=Path, help="the version folder, data/model/inference/<model>/1")
    parser.add_argument(
        "--warmup-batch-sizes",
        type=_batch_sizes,
        default=None,
        metavar="N,N,...",
        help="write assets.extra/tf_serving_warmup_requests with one request per batch size",
    )
    parser.add_argument(
        "--warmup-input-shape",
        type=_input_shape,
        action="append",
        default=[],
        metavar="NAME=D,D,...",
        help="an input's shape without the batch, where the signature leaves sizes open "
        "(a zoo model's input_tensor=640,640,3); repeat for several inputs",
    )
    args = parser.parse_args(argv)
    spec = model_spec(args.model, args.spec)
    acquired = read_json(args.acquired, "acquisition status")
    if acquired.get("status") != "ok":
        raise ServeprofError(
            f"model {args.model} was not acquired: {acquired.get('reason')}",
            acquired.get("fix") or f"rerun `serveprof acquire` for {args.model}",
        )
    if acquired.get("source") != spec["source"]:
        raise ServeprofError(
            f"{args.acquired} was acquired from source {acquired.get('source')!r}, the spec says {spec['source']!r}",
            f"delete {args.acquired} and rerun the acquisition",
        )
    started = time.monotonic()
    export(spec, acquired, args.out, args.warmup_batch_sizes, args.model, dict(args.warmup_input_shape) or None)
    log("export", f"model {args.model} exported to {args.out} in {time.monotonic() - started:.1f} s")
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of batch sizes, e.g. 1,8,32"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: batch sizes are whole numbers of at least 1, e.g. 1,8,32")
    return sizes


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.partition("=")
    try:
        shape = [int(part) for part in dims.split(",")]
    except ValueError:
        shape = []
    if not name or not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=D,D,...; e.g. input_tensor=640,640,3")
    return name, shape
