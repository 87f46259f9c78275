"""Request inputs built from a model's signature: names, dtypes and shapes come from the server.

Three kinds: ``random`` (a seeded generator, reproducible), ``zeros``, and ``images``
(real photos, resized and cast to the signature's dtype; detection post-processing
such as NMS depends on image content, so a detector is timed on photos). ``auto`` is
resolved before inputs are built: ``images`` for a detection model, ``random`` for a
classification model. No TensorFlow: images are read and resized with Pillow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from serveprof.errors import ServeprofError

KINDS = ("random", "zeros", "images")
AUTO = "auto"
MODEL_TYPES = ("classification", "detection")
# Outputs of the TF2 Detection Zoo's (and TF Object Detection API's) serving signature.
DETECTION_OUTPUTS = ("detection_boxes", "detection_scores", "num_detections")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Real RGB photographs bundled with scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
# Random float inputs cover the pixel range models are fed before their own preprocessing.
FLOAT_RANGE = (0.0, 255.0)


def auto_kind(model_type: str) -> str:
    """What ``auto`` means: photos for detection (NMS depends on image content), random data otherwise."""
    if model_type not in MODEL_TYPES:
        raise ServeprofError(
            f"model type {model_type!r} is not one of {', '.join(MODEL_TYPES)}",
            "pass --type classification or --type detection",
        )
    return "images" if model_type == "detection" else "random"


def model_type_of(signature_outputs: Mapping[str, Any]) -> str:
    """``detection`` for a signature with the Object Detection API's outputs, else ``classification``."""
    return "detection" if any(name in signature_outputs for name in DETECTION_OUTPUTS) else "classification"


@dataclass(frozen=True)
class InputSettings:
    """The ``measure.input`` block, complete: serveprof.settings fills the schema's defaults.

    ``image_size`` is used where a signature has free height and width; ``kind`` may
    still be ``auto`` until the model's type is known (``resolved``).
    """

    kind: str
    seed: int
    image_dir: str | None
    image_size: tuple[int, int]

    def resolved(self, model_type: str) -> InputSettings:
        """``auto`` made concrete for a model of ``model_type``; any other kind as it is."""
        return replace(self, kind=auto_kind(model_type)) if self.kind == AUTO else self


def _is_unknown(dim) -> bool:
    return dim is None or (isinstance(dim, (int, np.integer)) and dim < 0)


def resolve_shape(name: str, shape, batch_size: int, image_size: tuple[int, int]) -> tuple[int, ...]:
    """The concrete shape to send: batch dimension = ``batch_size``, free image height/width = ``image_size``."""
    if shape is None:
        raise ServeprofError(
            f"input {name!r} has an unknown rank, so no request shape can be derived",
            "export the model with a fully specified input rank (e.g. [None, H, W, 3])",
        )
    dims = list(shape)
    if not dims:
        raise ServeprofError(
            f"input {name!r} is a scalar: it has no batch dimension to set",
            "serve a signature whose inputs have a leading batch dimension",
        )
    if _is_unknown(dims[0]):
        dims[0] = batch_size
    elif int(dims[0]) != batch_size:
        raise ServeprofError(
            f"input {name!r} has a fixed batch dimension of {dims[0]} (shape {tuple(shape)}), so batch size {batch_size} cannot be sent",
            f"measure this model at batch size {dims[0]} only (set its batch_sizes to [{dims[0]}]), or export it with a free batch dimension",
        )
    for index in range(1, len(dims)):
        if not _is_unknown(dims[index]):
            dims[index] = int(dims[index])
            continue
        if len(dims) == 4 and index in (1, 2):
            dims[index] = image_size[index - 1]
            continue
        raise ServeprofError(
            f"input {name!r} has an unknown dimension at position {index} (shape {tuple(shape)}) that serveprof cannot choose",
            "export the model with that dimension fixed",
        )
    return tuple(dims)


def _check_fillable(name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise ServeprofError(
            f"input {name!r} has dtype {dtype} ({'string' if dtype.kind in 'OSU' else dtype.kind}), which serveprof cannot fill",
            "profile a signature whose inputs are numeric tensors (float, int, uint or bool)",
        )


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Floats uniform in [0, 255); integers uniform over the dtype's range; booleans fair."""
    if dtype.kind == "f":
        return rng.uniform(*FLOAT_RANGE, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def _photo_sources(image_dir: str | None) -> list[tuple[str, Any]]:
    """(label, loader) pairs; a loader returns a PIL RGB image."""
    from PIL import Image

    if image_dir is None:
        import skimage.data

        return [
            (f"skimage.data.{name}", lambda name=name: Image.fromarray(getattr(skimage.data, name)()).convert("RGB"))
            for name in SKIMAGE_PHOTOS
        ]
    folder = Path(image_dir)
    if not folder.is_dir():
        raise ServeprofError(
            f"image_dir {image_dir} is not a folder",
            "give a folder of .jpg/.png images, or null for scikit-image's sample photos",
        )
    files = sorted(path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not files:
        raise ServeprofError(
            f"image_dir {image_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})",
            "put some photos in it, or set image_dir to null for scikit-image's sample photos",
        )

    def load(path: Path):
        try:
            with Image.open(path) as image:
                return image.convert("RGB")
        except OSError as error:
            raise ServeprofError(f"cannot read image {path}: {error}", "remove or replace that file") from None

    return [(str(path), lambda path=path: load(path)) for path in files]


def load_photos(image_dir: str | None, height: int, width: int, channels: int) -> tuple[list[np.ndarray], list[str]]:
    """Photos resized (bilinear) to height × width, as float arrays in [0, 255] with ``channels`` channels."""
    from PIL import Image

    if channels not in (1, 3):
        raise ServeprofError(
            f"images have 1 or 3 channels, but the input takes {channels}",
            "use --input kind random or zeros for this model",
        )
    photos, labels = [], []
    for label, loader in _photo_sources(image_dir):
        image = loader().resize((width, height), Image.BILINEAR)
        if channels == 1:
            image = image.convert("L")
        pixels = np.asarray(image, dtype=np.float32)
        photos.append(pixels.reshape(height, width, channels))
        labels.append(label)
    return photos, labels


def _cast_pixels(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(pixels), max(info.min, 0), min(info.max, 255)).astype(dtype)
    if dtype.kind == "f":
        return pixels.astype(dtype)
    raise ServeprofError(f"images cannot be cast to dtype {dtype}", "use --input kind random or zeros for this model")


def build_inputs(
    signature_inputs: Mapping[str, Any], batch_size: int, settings: InputSettings
) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays for every signature input, and a description for the stats JSON.

    ``signature_inputs`` maps input names to objects with ``dtype`` and ``shape``
    (the client's ``SignatureInfo.inputs``).
    """
    if not signature_inputs:
        raise ServeprofError(
            "the model's signature has no inputs", "check that the served signature is the one to profile"
        )
    if settings.kind == AUTO:
        raise ServeprofError(
            "--input kind 'auto' reached input building unresolved",
            "resolve it first (InputSettings.resolved(model_type)); on the command line pass --type, or a kind of "
            "random, zeros or images",
        )
    image_size = settings.image_size
    rng = np.random.default_rng(settings.seed)
    arrays: dict[str, np.ndarray] = {}
    used_images: list[str] = []
    # Sorted, so the same seed fills the same input with the same numbers on every run.
    for name in sorted(signature_inputs):
        spec = signature_inputs[name]
        dtype = np.dtype(spec.dtype)
        _check_fillable(name, dtype)
        shape = resolve_shape(name, spec.shape, batch_size, image_size)
        if settings.kind == "zeros":
            arrays[name] = np.zeros(shape, dtype=dtype)
        elif settings.kind == "random":
            arrays[name] = random_array(rng, shape, dtype)
        else:
            if len(shape) != 4:
                raise ServeprofError(
                    f"kind images fills [batch, height, width, channels] inputs, but {name!r} has shape {tuple(spec.shape)}",
                    "use --input kind random or zeros for this model",
                )
            photos, used_images = load_photos(settings.image_dir, shape[1], shape[2], shape[3])
            # Cycle through the photos so a batch larger than the set still differs item to item.
            batch = np.stack([photos[index % len(photos)] for index in range(shape[0])])
            arrays[name] = _cast_pixels(batch, dtype)
    description = {
        "kind": settings.kind,
        "seed": settings.seed,
        "image_dir": settings.image_dir,
        "image_size": list(image_size),  # for free height/width only; fixed ones are the signature's
        "shapes": {name: list(array.shape) for name, array in arrays.items()},
        "dtypes": {name: str(array.dtype) for name, array in arrays.items()},
    }
    if used_images:
        description["images"] = used_images
    return arrays, description
