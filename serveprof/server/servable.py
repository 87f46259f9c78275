"""Which version to serve, its lifecycle state, and loading it as a SavedModel.

Version policy is TF Serving's default (``latest``): of the directories under the base
path whose names are whole numbers, the highest is served. Loading goes through
TensorFlow's Session-based SavedModel loader (session_bundle.py), as
tensorflow_model_server's does; the loaded MetaGraphDef's SignatureDefs are what
GetModelMetadata returns and what requests run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.server.tflite_session import TFLITE_FILE

log = logging.getLogger("serveprof.serve")


def find_served_version(base_path: str | Path, prefer_tflite: bool = False) -> tuple[int, Path]:
    """The highest numeric version directory under ``base_path`` and its path.

    With ``prefer_tflite`` (``--prefer_tflite_model``) a version holding only
    ``model.tflite`` is servable too, as in TF Serving.
    """
    base = Path(base_path)
    if not base.exists():
        raise ServeprofError(
            f"model base path {base} does not exist",
            "give --model_base_path the directory that holds the version directories (e.g. models/m with models/m/1/)",
        )
    if not base.is_dir():
        raise ServeprofError(
            f"model base path {base} is not a directory",
            "give --model_base_path the directory that holds the version directories, not a file",
        )
    versions = {}
    for child in base.iterdir():
        # TF Serving takes a directory name as a version only if it is all digits.
        if child.name.isascii() and child.name.isdigit() and child.is_dir():
            versions[int(child.name)] = child
    if not versions:
        present = sorted(child.name for child in base.iterdir())[:10]
        raise ServeprofError(
            f"no numeric version directory under {base} (found: {', '.join(present) or 'nothing'})",
            f"export the SavedModel into a version directory, e.g. {base / '1'}/saved_model.pb (TF Serving's layout)",
        )
    version = max(versions)
    path = versions[version]
    if prefer_tflite and (path / TFLITE_FILE).is_file():
        return version, path
    if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
        if (path / TFLITE_FILE).is_file():
            raise ServeprofError(
                f"version directory {path} holds {TFLITE_FILE} and no saved_model.pb",
                "start the server with --prefer_tflite_model=true to serve the TFLite model (TF Serving's flag)",
            )
        raise ServeprofError(
            f"version directory {path} has no saved_model.pb",
            "export a SavedModel there (tf.saved_model.save(model, path)) or remove the directory",
        )
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
    """One loaded SavedModel version: its Session, the signatures requests run, what GetModelMetadata shows."""

    bundle: Any  # session_bundle.SessionBundle; None for a TFLite model
    session: Any  # what every run goes through: a SessionRunner, or a BatchingSession in front of it
    signatures: dict[str, Any]  # signature key -> SignatureRunner
    signature_def_map: Any  # tensorflow_serving.apis.get_model_metadata_pb2.SignatureDefMap

    def close(self) -> None:
        if hasattr(self.session, "close"):
            self.session.close()


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


def load_servable(
    version_dir: Path, tags: list[str], session_config, batching=None, metrics=None, check_method_name: bool = False
) -> Servable:
    """Load ``version_dir`` as tensorflow_model_server does (session_bundle), batching-wrapped if asked."""
    from serveprof.server.session_bundle import load_session_bundle
    from serveprof.server.session_runner import SessionRunner

    bundle = load_session_bundle(version_dir, tags, session_config)
    return servable_from(
        bundle, SessionRunner(bundle.session), bundle.signature_defs, batching, metrics, check_method_name
    )


def load_tflite_servable(
    version_dir: Path, pools: int, batching=None, metrics=None, check_method_name: bool = False
) -> Servable:
    """Load ``version_dir``/model.tflite as TF Serving does with --prefer_tflite_model (tflite_session.py)."""
    from serveprof.server.tflite_session import load_tflite

    session, signature_defs = load_tflite(version_dir, pools)
    return servable_from(None, session, signature_defs, batching, metrics, check_method_name)


def servable_from(
    bundle, session, signature_defs: dict, batching=None, metrics=None, check_method_name=False
) -> Servable:
    """A Servable whose signatures run on ``session`` (a SessionRunner or TfLiteSession), batching-wrapped if asked."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    from serveprof.server.batching import BatchingSession
    from serveprof.server.signature_runner import SignatureRunner

    if batching is not None:
        log.info("Wrapping session to perform batch processing (%s)", batching.describe())
        session = BatchingSession(session, batching, metrics)
    signatures = {
        key: SignatureRunner(key, signature_def, session, check_method_name)
        for key, signature_def in signature_defs.items()
    }
    signature_def_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in signature_defs.items():
        signature_def_map.signature_def[key].CopyFrom(signature_def)
    return Servable(bundle=bundle, session=session, signatures=signatures, signature_def_map=signature_def_map)
