"""The ``xla`` variant: the fp32 SavedModel re-saved with ``jit_compile=True`` on its serving function.

The variables stay variables (the same checkpoint as fp32); only the serving function
is marked for XLA, which compiles it into one cluster per input shape at its first
call. tensorflow_model_server runs it only with ``--xla_cpu_compilation_enabled``
(``--xla_gpu_compilation_enabled`` on a GPU); serveprof passes that flag with the
variant (catalog.py).
"""

from __future__ import annotations

from pathlib import Path

from serveprof.models.batching import SERVING, save_serving


def export_xla(reference: str | Path, out: str | Path) -> str:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(reference))
    save_serving(loaded, loaded.signatures[SERVING], out, jit_compile=True)
    return "serving function compiled by XLA (jit_compile=True); variables as in fp32"
