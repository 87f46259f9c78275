"""The servability check every export ends with: would tensorflow_model_server serve this SavedModel?

In a fresh process (so nothing the export left in memory can hide a missing variable),
the written SavedModel is loaded through TensorFlow's Session-based loader, exactly as
``serveprof serve`` and tensorflow_model_server load it, and one batch-2 request runs
through ``serving_default`` on the server's own engine. A version folder holding only
``model.tflite`` (an int8 variant) is loaded as both serve it with
``--prefer_tflite_model``: into TensorFlow's TFLite interpreter, signature from the
model's metadata. A SavedModel that loads with
``tf.saved_model.load`` can still fail here: a ``tf.Module`` holding a Keras 3 model
loads, then fails its first request with "Could not find variable ..."
(tensorflow/serving#2226, keras-team/keras#20095).

Run as ``python -m serveprof.models.servability <version dir>``, it prints one JSON
line: ``{"ok": true, "outputs": {...}}`` or ``{"ok": false, "stage": ..., "error": ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from serveprof.errors import ServeprofError

BATCH = 2
UNKNOWN_SIZE = 32  # for image sides a signature leaves open (the zoo's [None, None, None, 3])
CHECK_TIMEOUT_S = 1800  # a large model's load on a busy CPU


def _check_here(version_dir: Path) -> dict:
    """Load and run in this process; the JSON-able verdict."""
    import numpy as np
    from tensorflow.core.protobuf import config_pb2

    from serveprof.models.signature_inputs import signature_inputs
    from serveprof.server.core import run_predict, signature
    from serveprof.server.servable import load_servable, load_tflite_servable
    from serveprof.server.tflite_session import TFLITE_FILE

    try:
        if (version_dir / TFLITE_FILE).is_file() and not (version_dir / "saved_model.pb").is_file():
            # A TFLite variant: served as tensorflow_model_server serves it with --prefer_tflite_model.
            servable = load_tflite_servable(version_dir, pools=1)
        else:
            servable = load_servable(version_dir, ["serve"], config_pb2.ConfigProto())
    except ServeprofError as error:
        return {"ok": False, "stage": "load", "error": error.problem}
    try:
        runner = signature(servable, "serving_default")
        arrays = signature_inputs(runner.signature_def, BATCH, unknown_size=UNKNOWN_SIZE)
        outputs = run_predict(servable, runner, arrays, lambda _alias, array: array)
    except Exception as error:  # noqa: BLE001 - any failure is the verdict
        return {"ok": False, "stage": "request", "error": f"{type(error).__name__}: {getattr(error, 'message', error)}"}
    shapes = {name: list(np.shape(array)) for name, array in outputs.items()}
    unbatched = sorted(name for name, shape in shapes.items() if not shape or shape[0] != BATCH)
    if unbatched:
        return {
            "ok": False,
            "stage": "outputs",
            "error": f"outputs {unbatched} do not have the request's batch of {BATCH}: {shapes}",
        }
    return {"ok": True, "outputs": shapes}


def check_servable(version_dir: str | os.PathLike, source: str) -> dict:
    """Run the check in a fresh process; raise ServeprofError with the reason and a fix if it fails."""
    version_dir = Path(version_dir)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "serveprof.models.servability", str(version_dir)],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")),
        )
    except subprocess.TimeoutExpired:
        raise ServeprofError(
            f"the servability check of {version_dir} did not finish within {CHECK_TIMEOUT_S} s",
            "check the machine is not overloaded, then rerun the export",
        ) from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    verdict = (
        json.loads(lines[-1])
        if lines
        else {"ok": False, "stage": "process", "error": f"exited with {done.returncode}: {done.stderr[-500:]}"}
    )
    if verdict["ok"]:
        return verdict
    raise ServeprofError(
        f"the exported SavedModel would not be served by tensorflow_model_server: its {verdict['stage']} through "
        f"TensorFlow's Session loader with a batch-{BATCH} request to serving_default failed: {verdict['error']}",
        _FIXES.get(source, _FIXES["saved_model"]),
    )


_FIXES = {
    "keras": "this is a bug in serveprof's Keras export (keras.export.ExportArchive); report it with the model's config",
    "tf2_zoo": "check the tarball is a TF2 Detection Zoo release; if it is, report it with the model's url",
    "saved_model": "re-export the SavedModel so the Session loader restores every variable: for Keras models use "
    "keras.export.ExportArchive (add_endpoint('serving_default', fn, input_signature=[...])) instead of "
    "tf.saved_model.save of a tf.Module holding the model (docs/models.md, 'Servability check')",
}


def main(argv: list[str]) -> int:
    import logging

    logging.disable(logging.INFO)  # the server's load lines are not this check's output
    print(json.dumps(_check_here(Path(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
