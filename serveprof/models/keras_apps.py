"""keras.applications by name, and the ImageNet weights file each one loads.

Which file an application loads (name, URL, hash) depends on the application and
its arguments (MobileNetV2's name holds alpha and the input rows), and Keras keeps
that knowledge inside each constructor. Rather than copy it into a table that would
drift, ``imagenet_weights_file`` runs the constructor in a Keras ``StatelessScope``
(layers are wired but no weight values are allocated) and stops it at its call to
``get_file``, which carries exactly the file Keras would load. Fetching that file
with Keras's own ``get_file`` puts it in Keras's cache (``~/.keras/models`` or
``$KERAS_HOME/models``), where the real build in ``serveprof export`` finds it
without network.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serveprof.errors import ServeprofError


@dataclass(frozen=True)
class WeightsFile:
    fname: str
    origin: str
    file_hash: str | None
    cache_subdir: str

    def cache_path(self) -> Path:
        return keras_home() / self.cache_subdir / self.fname


def keras_home() -> Path:
    """Keras's cache root: ``$KERAS_HOME``, else ``~/.keras`` (as keras.utils.get_file uses it)."""
    from keras.src.backend import config

    return Path(os.path.expanduser(config.keras_home()))


class _Described(Exception):
    def __init__(self, weights: WeightsFile):
        super().__init__(weights.fname)
        self.weights = weights


def application_names() -> list[str]:
    import keras

    return sorted(
        name for name in dir(keras.applications) if name[:1].isupper() and callable(getattr(keras.applications, name))
    )


def resolve_application(name: str) -> Callable[..., Any]:
    """The ``keras.applications`` constructor called ``name``; a clear error with close matches otherwise."""
    import keras

    names = application_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ServeprofError(
            f"keras.applications has no application {name!r}", f"{hint}set application to one of: {', '.join(names)}"
        )
    return getattr(keras.applications, name)


def input_shape(input_size: list[int] | None) -> tuple[int, int, int] | None:
    return None if input_size is None else (int(input_size[0]), int(input_size[1]), 3)


def bad_arguments(application: str, input_size: list[int] | None, weights: str, error: Exception) -> ServeprofError:
    """Keras's own ValueError (e.g. an input size its ImageNet weights do not fit), with our fix."""
    fix = (
        "set input_size to the size Keras names above" + (", or weights: random" if weights == "imagenet" else "")
        if input_size
        else "check the model's config entry"
    )
    return ServeprofError(
        f"keras.applications.{application}(weights={weights!r}, input_size={input_size}) cannot be built: {error}", fix
    )


def imagenet_weights_file(application: str, input_size: list[int] | None) -> WeightsFile:
    """The file ``keras.applications.<application>(weights="imagenet")`` would load."""
    from keras import StatelessScope
    from keras.src.utils import file_utils

    constructor = resolve_application(application)

    def describe(fname=None, origin=None, file_hash=None, cache_subdir="datasets", **_):
        raise _Described(WeightsFile(fname, origin, file_hash, cache_subdir))

    real_get_file = file_utils.get_file
    file_utils.get_file = describe
    try:
        with StatelessScope():
            constructor(weights="imagenet", input_shape=input_shape(input_size))
    except _Described as described:
        return described.weights
    except ValueError as error:
        raise bad_arguments(application, input_size, "imagenet", error) from None
    finally:
        file_utils.get_file = real_get_file
    raise ServeprofError(
        f"keras.applications.{application} loaded no ImageNet weights file", "set weights: random for this model"
    )


class WeightsUnavailable(Exception):
    """Keras could neither find the weights file in its cache nor download it."""


def fetch_weights(weights: WeightsFile) -> Path:
    """Keras's own download and cache: no network when the file is already cached (and its hash matches)."""
    from keras.utils import get_file

    try:
        return Path(
            get_file(weights.fname, weights.origin, file_hash=weights.file_hash, cache_subdir=weights.cache_subdir)
        )
    except Exception as error:  # Keras raises a bare Exception: "URL fetch failure on <origin>: <errno> -- <reason>"
        raise WeightsUnavailable(str(error).rsplit(" -- ", 1)[-1]) from error
