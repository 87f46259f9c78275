"""Which version to serve, its lifecycle state, and loading it as a SavedModel.

Version policy is TF Serving's default (``latest``): of the directories under the base
path whose names are whole numbers, the highest is served. Loading reads the
SignatureDefs from ``saved_model.pb`` itself (they are what GetModelMetadata returns,
exactly as TF Serving returns them) and the callable signatures from
``tf.saved_model.load``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError

log = logging.getLogger("serveprof.serve")

SERVE_TAG = "serve"


def find_served_version(base_path: str | Path) -> tuple[int, Path]:
    """The highest numeric version directory under ``base_path`` and its path."""
    base = Path(base_path)
    if not base.exists():
        raise ServeprofError(f"model base path {base} does not exist",
                             "give --model_base_path the directory that holds the version directories (e.g. models/m with models/m/1/)")
    if not base.is_dir():
        raise ServeprofError(f"model base path {base} is not a directory",
                             "give --model_base_path the directory that holds the version directories, not a file")
    versions = {}
    for child in base.iterdir():
        # TF Serving takes a directory name as a version only if it is all digits.
        if child.name.isascii() and child.name.isdigit() and child.is_dir():
            versions[int(child.name)] = child
    if not versions:
        present = sorted(child.name for child in base.iterdir())[:10]
        raise ServeprofError(
            f"no numeric version directory under {base} (found: {', '.join(present) or 'nothing'})",
            f"export the SavedModel into a version directory, e.g. {base / '1'}/saved_model.pb (TF Serving's layout)")
    version = max(versions)
    path = versions[version]
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        raise ServeprofError(f"version directory {path} has no saved_model.pb",
                             "export a SavedModel there (tf.saved_model.save(model, path)) or remove the directory")
    return version, path


class State(IntEnum):
    """ModelVersionStatus.State numbers (tensorflow_serving/apis/get_model_status.proto)."""

    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass
class Servable:
    """One loaded SavedModel version: what Predict runs and what GetModelMetadata shows."""

    signatures: dict[str, Any]  # signature key -> SignatureRunner
    signature_def_map: Any  # tensorflow_serving.apis.get_model_metadata_pb2.SignatureDefMap
    keepalive: Any = None  # the loaded SavedModel object; its variables back the signatures


@dataclass
class ModelHost:
    """The one model this server serves and where its single version is in its lifecycle."""

    name: str
    version: int
    path: Path
    state: State = State.START
    error: str = ""
    servable: Servable | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def set_state(self, state: State, error: str = "", servable: Servable | None = None) -> None:
        with self._lock:
            # The servable is published before AVAILABLE, so no reader sees AVAILABLE without it.
            if servable is not None:
                self.servable = servable
            self.state, self.error = state, error

    def snapshot(self) -> tuple[State, str, Servable | None]:
        with self._lock:
            return self.state, self.error, self.servable


def read_signature_defs(version_dir: Path) -> dict[str, Any]:
    """The SignatureDefs of the MetaGraphDef tagged ``serve``, as protos."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    binary = version_dir / "saved_model.pb"
    if binary.is_file():
        saved_model.ParseFromString(binary.read_bytes())
    else:
        text_format.Parse((version_dir / "saved_model.pbtxt").read_text(), saved_model)
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            return dict(meta_graph.signature_def)
    tags = [list(meta_graph.meta_info_def.tags) for meta_graph in saved_model.meta_graphs]
    raise ServeprofError(f"{version_dir} has no MetaGraphDef tagged {SERVE_TAG!r} (tags present: {tags})",
                         "export the model with tf.saved_model.save, which tags its graph 'serve'")


def load_servable(version_dir: Path) -> Servable:
    """Load the SavedModel at ``version_dir``; raise ``ServeprofError`` saying why it cannot be."""
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2

    from serveprof.server.signature_runner import SignatureRunner

    try:
        signature_defs = read_signature_defs(version_dir)
        loaded = tf.saved_model.load(str(version_dir), tags=[SERVE_TAG])
    except ServeprofError:
        raise
    except Exception as error:  # TF raises many types for a damaged SavedModel
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ServeprofError(f"cannot load the SavedModel in {version_dir}: {type(error).__name__}: {first_line}",
                             "re-export the model (tf.saved_model.save) into that version directory") from error
    signatures = {}
    for key, function in loaded.signatures.items():
        if key in signature_defs:
            signatures[key] = SignatureRunner(key, signature_defs[key], function)
    if not signatures:
        raise ServeprofError(f"the SavedModel in {version_dir} has no callable signature",
                             "export it with signatures={'serving_default': ...}")
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in signature_defs.items():
        signature_def_map.signature_def[key].CopyFrom(signature_def)
    return Servable(signatures=signatures, signature_def_map=signature_def_map, keepalive=loaded)
