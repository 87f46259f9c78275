"""A local SavedModel, served as it is when it already takes a batch under ``serving_default``.

Otherwise it is re-saved: the chosen signature becomes ``serving_default``, and a
signature whose batch is fixed at 1 is batch-wrapped as the zoo models are.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.models.archive import SAVED_MODEL_PB
from serveprof.models.batching import SERVING, save_serving
from serveprof.models.log import log, timed


def find_saved_model(path: str | os.PathLike) -> Path:
    """``path`` itself if it holds saved_model.pb, else its highest numeric version that does.

    A wrong path is a typo in the config, so this raises instead of marking the model
    unavailable.
    """
    root = Path(path)
    if (root / SAVED_MODEL_PB).is_file():
        return root
    versions = (
        sorted(
            (int(child.name), child)
            for child in root.iterdir()
            if child.name.isdigit() and (child / SAVED_MODEL_PB).is_file()
        )
        if root.is_dir()
        else []
    )
    if versions:
        return versions[-1][1]
    what = (
        "does not exist" if not root.exists() else f"holds no {SAVED_MODEL_PB} and no numeric version folder with one"
    )
    raise ServeprofError(
        f"SavedModel path {root} (resolved: {root.resolve()}) {what}",
        "set the model's path to a SavedModel directory (with saved_model.pb) or to a base path "
        "of numeric versions; relative paths are relative to the workflow directory",
    )


def _batchable(signature) -> bool:
    _, inputs = signature.structured_input_signature
    return all(spec.shape.rank and spec.shape[0] is None for spec in inputs.values())


def export_saved_model(source: str | os.PathLike, out: Path, signature_name: str | None) -> str:
    """Write ``source`` into the version folder ``out``; returns what is served, for the log."""
    import tensorflow as tf

    name = signature_name or SERVING
    with timed("export", f"loading {source}"):
        loaded = tf.saved_model.load(str(source))
    if name not in loaded.signatures:
        raise ServeprofError(
            f"SavedModel {source} has no signature {name!r}; it has {sorted(loaded.signatures)}",
            "set the model's signature to one of those",
        )
    signature = loaded.signatures[name]
    if name == SERVING and _batchable(signature):
        with timed("export", f"copying {source} (its {SERVING} signature already takes a batch)"):
            shutil.copytree(source, out, dirs_exist_ok=True)
        return f"{SERVING} as it is"
    wrapped = save_serving(loaded, signature, out)
    served = f"{SERVING} from signature {name!r}" + (", batch-wrapped (its batch was fixed)" if wrapped else "")
    log("export", f"serving {served}")
    return served
