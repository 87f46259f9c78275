"""A TF2 Detection Zoo tarball as a SavedModel whose ``serving_default`` takes a batch."""

from __future__ import annotations

import tempfile
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.models.archive import extract_zoo_tarball
from serveprof.models.batching import SERVING, save_serving
from serveprof.models.log import timed


def export_zoo(tarball: str | Path, out: Path) -> None:
    import tensorflow as tf

    # Extracted beside the output (same file system, a name TF Serving ignores) and always removed.
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=out.parent) as scratch:
        with timed("export", f"extracting {tarball}"):
            saved_model = extract_zoo_tarball(tarball, scratch)
        with timed("export", f"loading {saved_model.relative_to(scratch)}"):
            loaded = tf.saved_model.load(str(saved_model))
        if not loaded.signatures:
            raise ServeprofError(
                f"the SavedModel in {tarball} has no signatures", "use a TF2 Detection Zoo release tarball"
            )
        name = SERVING if SERVING in loaded.signatures else sorted(loaded.signatures)[0]
        save_serving(loaded, loaded.signatures[name], out)
