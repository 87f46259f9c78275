"""Build one variant of a model from its fp32 export, check it is servable, and write its status.

``export_variant`` writes the variant's base path (``<base>/1/``: a SavedModel, or
``model.tflite`` for int8) beside its final place and publishes it only once the
servability check passed: a fresh process loads it as the server will (Session loader,
or TFLite interpreter for ``model.tflite``) and runs one batch-2 request. A variant that
cannot be built for this model (the converter refuses an op, the graph has no kernel
for a dtype, TensorRT is missing) is not an error of the run: its status says
``unavailable`` with the reason, the base path holds no version, and the workflow
reports it as not profiled while the other variants go on. The status holds no
timestamp, so rebuilding the same variant writes the same bytes.
"""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.measure.inputs import InputSettings
from serveprof.models.log import log, timed
from serveprof.models.publish import building_dir
from serveprof.variants.catalog import REFERENCE, server_flags, variant

VERSION = "1"


def calibration_inputs(reference: Path, inputs: InputSettings, samples: int) -> dict:
    """``samples`` inputs for the fp32 signature from the input builder, seeded apart from the timed and accuracy sets."""
    from dataclasses import replace

    from tensorflow_serving.apis import get_model_metadata_pb2

    from serveprof.client.metadata import signature_from_map
    from serveprof.measure.inputs import AUTO, build_inputs, model_type_of
    from serveprof.models.signature_inputs import serving_signature

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature_map.signature_def["serving_default"].CopyFrom(serving_signature(reference))
    signature = signature_from_map(signature_map, "serving_default", str(reference))
    if inputs.kind == AUTO:  # real photos for a detector, as its timed requests get
        inputs = inputs.resolved(model_type_of(signature.outputs))
    arrays, _ = build_inputs(signature.inputs, samples, replace(inputs, seed=inputs.seed + 1))
    return arrays


def build(
    name: str,
    reference: Path,
    out: Path,
    *,
    calibration: Callable[[], dict] | None = None,
    device: str = "CPU",
) -> list[str]:
    """Write variant ``name`` of the fp32 SavedModel ``reference`` into the version folder ``out``; notes for the status."""
    if name in ("frozen", "fp16", "bf16"):
        from serveprof.variants.graph import frozen_signature, save_graph

        with timed("export", f"freezing {reference}"):
            flat = frozen_signature(reference)
        notes = [f"frozen: {len(flat.graph_def.node)} nodes, variables folded into constants"]
        if name != "frozen":
            from serveprof.variants.precision import lower_precision

            with timed("export", f"rewriting the graph in {name} for {device} kernels"):
                lowered = lower_precision(flat, name, device)
            flat = lowered.flat
            notes.append(lowered.note(name))
        with timed("export", f"saving SavedModel to {out}"):
            save_graph(flat, out)
        return notes
    if name in ("int8", "int8_dynamic"):
        from serveprof.models.signature_inputs import serving_signature
        from serveprof.variants.tflite import convert, write_tflite

        arrays = calibration() if name == "int8" and calibration else None
        what = f"{name} with {len(next(iter(arrays.values())))} calibration inputs" if arrays else name
        count = len(next(iter(arrays.values()))) if arrays else 0
        with timed("export", f"converting {reference} to TFLite ({what})"):
            model = convert(reference, name, arrays)
        path = write_tflite(model, serving_signature(reference), out)
        return [
            f"TFLite model {path.name}, {path.stat().st_size:,} bytes"
            + (f"; calibrated on {count} seeded inputs" if arrays else "")
        ]
    if name == "xla":
        from serveprof.variants.xla import export_xla

        return [export_xla(reference, out)]
    if name == "tftrt":
        from serveprof.variants.tftrt import export_tftrt

        return [export_tftrt(reference, out)]
    raise ServeprofError(f"variant {name!r} is not built by serveprof export-variant", "fp32 is serveprof export's")


def status(model: str, name: str, state: str, **fields) -> dict:
    chosen = variant(name)
    return {
        "model": model,
        "variant": name,
        "status": state,
        "format": chosen.format,
        "summary": chosen.summary,
        "reason": fields.get("reason"),
        "fix": fields.get("fix"),
        "notes": fields.get("notes", []),
        "server_flags": list(fields.get("server_flags", ())),
        "reference": fields.get("reference"),
        "size_bytes": fields.get("size_bytes"),
    }


def export_variant(
    model: str,
    name: str,
    reference: str | Path,
    base_path: str | Path,
    *,
    source: str = "saved_model",
    calibration: Callable[[], dict] | None = None,
    gpu: bool = False,
) -> dict:
    """Build variant ``name`` into ``base_path``/1 and return its status; a variant that cannot be built is 'unavailable'."""
    reference, base_path = Path(reference), Path(base_path)
    if name == REFERENCE:
        raise ServeprofError("fp32 is the export itself", "use serveprof export for fp32")
    if not (reference / "saved_model.pb").is_file():
        raise ServeprofError(
            f"the fp32 export {reference} holds no saved_model.pb",
            "run serveprof export for the model first (the workflow does)",
        )
    common = {"reference": str(reference), "server_flags": server_flags(name, gpu)}
    # A failed build leaves the base path without a version folder, so no server can take it for a model.
    shutil.rmtree(base_path / VERSION, ignore_errors=True)
    base_path.mkdir(parents=True, exist_ok=True)
    try:
        with building_dir(base_path / VERSION) as scratch:
            notes = build(name, reference, scratch, calibration=calibration, device="GPU" if gpu else "CPU")
            from serveprof.models.servability import check_servable

            with timed("export", f"servability check of {name} (fresh process, batch-2 request to serving_default)"):
                verdict = check_servable(scratch, source)
            notes.append(f"servable: outputs {verdict['outputs']} at batch 2")
    except ServeprofError as error:
        log("export", f"variant {name} of {model} cannot be built: {error.problem}")
        return status(model, name, "unavailable", reason=error.problem, fix=error.fix, **common)
    except Exception as error:  # noqa: BLE001 - TensorFlow fails in many ways; the run goes on without this variant
        log("export", f"variant {name} of {model} cannot be built:\n{traceback.format_exc()}")
        first = (str(error).strip().splitlines() or [""])[0][:500]
        return status(
            model,
            name,
            "unavailable",
            reason=f"building {name} failed: {type(error).__name__}: {first}",
            fix="the export log (logs/export_variant/) has the traceback; if the model is a standard one, report it",
            **common,
        )
    version = base_path / VERSION
    size = sum(path.stat().st_size for path in version.rglob("*") if path.is_file())
    return status(model, name, "ok", notes=notes, size_bytes=size, **common)
