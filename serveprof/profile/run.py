"""One per-layer profile: load the model as the embedded server does, trace it, break the time down."""

from __future__ import annotations

from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.measure.inputs import InputSettings
from serveprof.profile.breakdown import Breakdown, breakdown


def profile(
    version_dir: str | Path,
    batch_size: int,
    inputs: InputSettings,
    *,
    warmup: int = 25,
    iterations: int = 300,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
    signature_name: str = "serving_default",
    block_pattern: str | None = None,
    log=lambda _line: None,
) -> Breakdown:
    """Trace ``iterations`` runs of ``signature_name`` at ``batch_size`` in the server's Session and break them down."""
    from serveprof.server.tflite_session import TFLITE_FILE

    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        if (version_dir / TFLITE_FILE).is_file():
            raise ServeprofError(
                f"{version_dir} holds a TFLite model: its interpreter keeps no TensorFlow step stats to break down",
                "profile the fp32, frozen, fp16, bf16 or xla variant (a SavedModel); TFLite's own benchmark_model "
                "tool has a per-op profiler for TFLite models",
            )
        raise ServeprofError(f"{version_dir} holds no saved_model.pb", "export the model first (serveprof export)")
    if warmup < 0 or iterations < 2:
        raise ServeprofError(
            f"warm-up {warmup} and iterations {iterations}", "give a warm-up of 0 or more and 2 or more iterations"
        )
    from tensorflow_serving.apis import get_model_metadata_pb2

    from serveprof.client.metadata import signature_from_map
    from serveprof.measure.inputs import AUTO, build_inputs, model_type_of
    from serveprof.profile.layers import parameter_counts
    from serveprof.profile.trace import session_callables, trace_runs
    from serveprof.server.servable import load_servable
    from serveprof.server.session_bundle import session_config

    servable = load_servable(version_dir, ["serve"], session_config(intra_op_threads, inter_op_threads, 0))
    try:
        if signature_name not in servable.signatures:
            raise ServeprofError(
                f"{version_dir} has no signature {signature_name!r}",
                f"use one of {', '.join(sorted(servable.signatures))}",
            )
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        signature_map.signature_def[signature_name].CopyFrom(servable.signatures[signature_name].signature_def)
        signature = signature_from_map(signature_map, signature_name, str(version_dir))
        if inputs.kind == AUTO:
            inputs = inputs.resolved(model_type_of(signature.outputs))
        feeds, _ = build_inputs(signature.inputs, batch_size, inputs)
        run, traced = session_callables(servable, signature_name, feeds)
        trace = trace_runs(run, traced, warmup=warmup, iterations=iterations, log=log)
    finally:
        servable.close()
    return breakdown(trace, parameter_counts(version_dir), block_pattern)
