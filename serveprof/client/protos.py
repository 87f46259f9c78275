"""tensorflow-serving-api's message modules, imported without importing TensorFlow.

The generated ``tensorflow_serving.apis.*_pb2`` modules import their dependencies from
``tensorflow.core.*`` (tensor.proto, meta_graph.proto, ...). Those are plain generated
files, but reaching them normally runs ``tensorflow/__init__.py``, which loads all of
TensorFlow: about 3 s and hundreds of MB in every measuring process. So, unless
TensorFlow is already loaded, the import runs with a bare ``tensorflow`` package
standing in (same directory, empty ``__init__``). Afterwards every module it added
under ``tensorflow`` and ``tensorflow_serving`` is taken out of ``sys.modules`` again:
a later ``import tensorflow`` in this process loads the real package from scratch,
and the descriptor pool, already holding the same files, hands it the same classes.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
import types

_lock = threading.Lock()
_PREFIXES = ("tensorflow", "tensorflow_serving")


def _owned(name: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in _PREFIXES)


def _import_apis(names: tuple[str, ...]) -> list[types.ModuleType]:
    modules = [f"tensorflow_serving.apis.{name}" for name in names]
    if "tensorflow" in sys.modules:  # the real package is loaded: nothing to avoid
        return [importlib.import_module(module) for module in modules]
    spec = importlib.util.find_spec("tensorflow")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "tensorflow-serving-api needs the tensorflow distribution's generated protos; "
            "install the project's dependencies (pip install -e .)"
        )
    before = set(sys.modules)
    bare = types.ModuleType("tensorflow")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = importlib.machinery.ModuleSpec("tensorflow", None, is_package=True)
    bare.__spec__.submodule_search_locations = bare.__path__
    sys.modules["tensorflow"] = bare
    try:
        return [importlib.import_module(module) for module in modules]
    finally:
        for name in set(sys.modules) - before:
            if _owned(name):
                del sys.modules[name]


with _lock:
    predict_pb2, get_model_metadata_pb2, get_model_status_pb2 = _import_apis(
        ("predict_pb2", "get_model_metadata_pb2", "get_model_status_pb2")
    )

PREDICT = "/tensorflow.serving.PredictionService/Predict"
GET_MODEL_METADATA = "/tensorflow.serving.PredictionService/GetModelMetadata"
GET_MODEL_STATUS = "/tensorflow.serving.ModelService/GetModelStatus"
