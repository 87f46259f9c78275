"""A SavedModel loaded as tensorflow_model_server loads it: into a Session, through the SavedModel loader.

TF Serving's SavedModelBundleFactory calls TensorFlow's ``LoadSavedModel``: it imports
the MetaGraphDef with the requested tags into a new Session, restores the variables
through the MetaGraph's saver, and runs the init op. From Python the same loader is
``tf.compat.v1.saved_model.loader.load`` on a ``tf.compat.v1.Session`` of its own
graph. Requests then run as Session runs on the SignatureDef's tensor names
(``session_runner``), never through the TF2 functions ``tf.saved_model.load`` builds.
So a SavedModel this server loads and runs is one tensorflow_model_server loads and runs,
TF1 exports included, and one it cannot load fails here the same way.

The Session's ConfigProto is built as server.cc builds it: ``--tensorflow_session_config_file``
first, then the parallelism flags on top.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError

log = logging.getLogger("serveprof.serve")

SERVE_TAG = "serve"


@dataclass
class SessionBundle:
    """A loaded SavedModel: its Session and the MetaGraphDef it was loaded from."""

    session: Any  # tf.compat.v1.Session
    meta_graph_def: Any  # tensorflow.core.protobuf.meta_graph_pb2.MetaGraphDef
    path: Path
    load_seconds: float

    @property
    def signature_defs(self) -> dict:
        return dict(self.meta_graph_def.signature_def)


def session_config(intra_op: int, inter_op: int, session_parallelism: int, config_file: str = ""):
    """The ConfigProto server.cc builds from the flags; raises ServeprofError for a bad combination or file."""
    from google.protobuf import text_format
    from tensorflow.core.protobuf import config_pb2

    config = config_pb2.ConfigProto()
    if config_file:
        try:
            text_format.Parse(Path(config_file).read_text(), config)
        except OSError as error:
            raise ServeprofError(
                f"--tensorflow_session_config_file={config_file}: cannot read it ({error.strerror})",
                "point it at a readable text-format tensorflow.ConfigProto file",
            ) from None
        except text_format.ParseError as error:
            raise ServeprofError(
                f"Invalid protobuf file: '{config_file}' (--tensorflow_session_config_file): "
                f"Error parsing text-format tensorflow.ConfigProto: {error}",
                "fix the line named above; the file holds a text-format tensorflow.ConfigProto",
            ) from None
    if intra_op > 0 and inter_op > 0 and session_parallelism > 0:
        raise ServeprofError(
            "Either configure --tensorflow_session_parallelism or (--tensorflow_intra_op_parallelism, "
            "--tensorflow_inter_op_parallelism) separately. You cannot configure all.",
            "drop --tensorflow_session_parallelism, or the two separate flags",
        )
    if intra_op > 0 or inter_op > 0:
        config.intra_op_parallelism_threads = intra_op
        config.inter_op_parallelism_threads = inter_op
    else:
        # server.cc sets both from --tensorflow_session_parallelism, 0 (TensorFlow's choice) by default,
        # overriding whatever the config file said.
        config.intra_op_parallelism_threads = session_parallelism
        config.inter_op_parallelism_threads = session_parallelism
    return config


def load_session_bundle(version_dir: Path, tags: list[str], config) -> SessionBundle:
    """Load ``version_dir`` into a new Session; raise ServeprofError saying why it cannot be loaded."""
    import tensorflow as tf
    from tensorflow.python.util import deprecation

    started = time.monotonic()
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
        with graph.as_default(), deprecation.silence():  # "use tf.saved_model.load": not the loader TF Serving uses
            meta_graph_def = tf.compat.v1.saved_model.loader.load(session, tags, str(version_dir))
    except Exception as error:  # TF raises many types for a damaged or unservable SavedModel
        session.close()
        text = str(error).strip()
        first_line = text.splitlines()[0] if text else type(error).__name__
        raise ServeprofError(
            f"cannot load the SavedModel in {version_dir} with TensorFlow's Session loader (as tensorflow_model_server "
            f"loads it): {type(error).__name__}: {first_line}",
            "re-export it so the Session loader restores every variable (Keras: keras.export.ExportArchive or "
            "`serveprof export`; see docs/models.md), and check its tags with saved_model_cli show --dir "
            f"{version_dir}",
        ) from error
    graph.finalize()  # nothing may add ops once serving starts; a request that would is a bug
    return SessionBundle(
        session=session, meta_graph_def=meta_graph_def, path=Path(version_dir), load_seconds=time.monotonic() - started
    )


def xla_functions(meta_graph_def) -> list[str]:
    """The functions of a MetaGraphDef marked for XLA (``jit_compile=True`` sets ``_XlaMustCompile``)."""
    return sorted(
        function.signature.name
        for function in meta_graph_def.graph_def.library.function
        if function.attr["_XlaMustCompile"].b
    )
