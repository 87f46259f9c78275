"""The variants serveprof can build, what each is, and what serving it needs.

A variant is made from the model's fp32 export (``data/model/inference/<model>/1``), so
every variant of a model starts from the same weights and signature, and is served
under the same model name with the same inputs and outputs: the client, the input
builder and the procedure do not change. What a backend must be told to serve one is
in ``server_flags``: tensorflow_model_server's own flags, passed to every backend
(the embedded server takes them too). No TensorFlow here: the Snakefile reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from serveprof.server.tflite_session import TFLITE_FILE  # noqa: F401 - where a TFLite variant's model goes

REFERENCE = "fp32"
SAVED_MODEL, TFLITE = "saved_model", "tflite"


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    format: str  # SAVED_MODEL or TFLITE: what the version folder holds
    needs_gpu: bool = False
    cpu_flags: tuple[str, ...] = ()  # tensorflow_model_server flags it needs on a CPU run
    gpu_flags: tuple[str, ...] = ()  # ... and on a GPU run


VARIANTS = {
    variant.name: variant
    for variant in (
        Variant("fp32", "the export as it is: float32 weights and compute, variables restored at load", SAVED_MODEL),
        Variant(
            "frozen",
            "the fp32 graph with its variables folded into constants (a frozen graph), functions inlined",
            SAVED_MODEL,
        ),
        Variant(
            "fp16",
            "the frozen graph in float16: weights and every op with a float16 kernel on the serving device; "
            "inputs and outputs keep the signature's dtype",
            SAVED_MODEL,
        ),
        Variant(
            "bf16",
            "the frozen graph in bfloat16: weights and every op with a bfloat16 kernel on the serving device; "
            "inputs and outputs keep the signature's dtype",
            SAVED_MODEL,
        ),
        Variant(
            "int8_dynamic",
            "TFLite with dynamic-range quantization: int8 weights, activations quantized on the fly",
            TFLITE,
            cpu_flags=("--prefer_tflite_model=true",),
        ),
        Variant(
            "int8",
            "TFLite with full-integer quantization calibrated on seeded inputs: int8 weights and activations, "
            "float inputs and outputs",
            TFLITE,
            cpu_flags=("--prefer_tflite_model=true",),
        ),
        Variant(
            "xla",
            "the fp32 SavedModel re-saved with jit_compile=True on its serving function (XLA)",
            SAVED_MODEL,
            # tensorflow_model_server disables XLA's JIT unless asked (main.cc, DisableXlaCompilation).
            cpu_flags=("--xla_cpu_compilation_enabled=true",),
            gpu_flags=("--xla_gpu_compilation_enabled=true",),
        ),
        Variant(
            "tftrt",
            "TF-TRT: the fp32 SavedModel converted by TensorRT (float16 engines) for a GPU",
            SAVED_MODEL,
            needs_gpu=True,
        ),
    )
}
NAMES = tuple(VARIANTS)


def variant(name: str) -> Variant:
    from serveprof.errors import ServeprofError

    if name not in VARIANTS:
        raise ServeprofError(f"unknown variant {name!r}", f"use one of {', '.join(NAMES)}")
    return VARIANTS[name]


def server_flags(name: str, gpu: bool) -> tuple[str, ...]:
    """The flags a server needs to serve variant ``name`` (added to ``server.extra_flags``)."""
    chosen = variant(name)
    return chosen.gpu_flags if gpu and chosen.gpu_flags else chosen.cpu_flags


def serving_problem(name: str, gpu: bool) -> tuple[str, str] | None:
    """(why, fix) when variant ``name`` cannot be served by a run with ``server.gpu`` = ``gpu``; None when it can.

    Known before any job runs, so the run refuses it at once rather than skipping it.
    """
    chosen = variant(name)
    if chosen.needs_gpu and not gpu:
        return (
            f"variant {name} needs a GPU with TensorRT, and server.gpu is false",
            f"remove {name} from variants, or run on a GPU node with TensorRT and set server.gpu: true (docs/variants.md)",
        )
    if chosen.format == TFLITE and gpu:
        return (
            f"variant {name} is served as a TFLite model, which tensorflow_model_server runs on the CPU only "
            "(TfLiteSession has no GPU delegate), so a GPU run would time the CPU",
            f"profile {name} in a CPU run (server.gpu: false), or use tftrt on the GPU",
        )
    return None


def unknown(names: Iterable[str]) -> list[str]:
    return [name for name in names if name not in VARIANTS]
