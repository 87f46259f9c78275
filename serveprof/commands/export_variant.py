"""``serveprof export-variant``: one variant of a model (fp16, bf16, int8, frozen, xla, tftrt) from its fp32 export.

The variant's version folder (``--out``/1) is published only once it passed the
servability check, and ``--status`` says ``ok`` or ``unavailable`` with the reason: a
variant that cannot be built for this model (an op without an int8 kernel, no TensorRT)
is reported as not profiled and the run goes on. Exit 0 either way; bad arguments exit 1
(serveprof/variants/export.py).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from serveprof import settings
from serveprof.commands.arguments import json_object, log
from serveprof.measure.result_files import write_json
from serveprof.variants.catalog import NAMES, REFERENCE


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="serveprof export-variant", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model's key in the config")
    parser.add_argument("--variant", required=True, choices=[name for name in NAMES if name != REFERENCE])
    parser.add_argument(
        "--reference", required=True, type=Path, help="the fp32 version folder, e.g. data/model/inference/<model>/1"
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="the variant's model base path (its version 1 goes inside)"
    )
    parser.add_argument("--status", required=True, type=Path, help="where the variant's status JSON goes")
    parser.add_argument("--input", default="{}", help="the measure.input block as JSON (int8's calibration inputs)")
    parser.add_argument("--calibration-samples", type=int, default=32, help="inputs int8 is calibrated on")
    parser.add_argument("--source", default="saved_model", help="the model's source (servability check's advice)")
    parser.add_argument("--gpu", action="store_true", help="build for a GPU run (server.gpu: true)")
    args = parser.parse_args(argv)
    from serveprof.variants.export import calibration_inputs, export_variant

    inputs = settings.input_settings(json_object(args.input, "--input", '{"kind": "random", "seed": 0}'))
    status = export_variant(
        args.model,
        args.variant,
        args.reference,
        args.out,
        source=args.source,
        calibration=lambda: calibration_inputs(args.reference, inputs, args.calibration_samples),
        gpu=args.gpu,
    )
    write_json(args.status, status)
    log(
        "export-variant",
        f"{args.model} {args.variant}: {status['status']}" + (f" ({status['reason']})" if status["reason"] else ""),
    )
    print(json.dumps(status))
    return 0
