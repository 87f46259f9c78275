"""Input generation from a signature: shapes, dtypes, seeds, photos, and the errors for what cannot be filled."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from serveprof.commands.arguments import json_object
from serveprof.errors import ServeprofError
from serveprof.measure.inputs import SKIMAGE_PHOTOS, InputSettings, build_inputs, model_type_of
from serveprof.settings import defaults, input_settings

SCHEMA_INPUT = defaults("measure", "input")


def inputs(**block) -> InputSettings:
    """InputSettings as the settings owner builds them: missing keys take the schema's defaults."""
    return input_settings(block)


@dataclass
class Spec:  # what the client's SignatureInfo.inputs values carry
    dtype: np.dtype
    shape: tuple


CLASSIFIER = {"images": Spec(np.dtype("float32"), (None, 8, 8, 3))}
DETECTOR = {"input_tensor": Spec(np.dtype("uint8"), (1, None, None, 3))}


def test_random_is_reproducible_with_its_seed():
    settings = inputs(kind="random", seed=7)
    first, description = build_inputs(CLASSIFIER, 3, settings)
    again, _ = build_inputs(CLASSIFIER, 3, settings)
    other, _ = build_inputs(CLASSIFIER, 3, inputs(kind="random", seed=8))
    images = first["images"]
    assert images.shape == (3, 8, 8, 3) and images.dtype == np.float32
    np.testing.assert_array_equal(images, again["images"])
    assert not np.array_equal(images, other["images"])
    assert 0.0 <= images.min() and images.max() < 255.0 and images.std() > 10
    assert description["shapes"] == {"images": [3, 8, 8, 3]}
    assert description["dtypes"] == {"images": "float32"}
    assert (description["kind"], description["seed"]) == ("random", 7)


def test_random_integers_span_the_dtype_range():
    arrays, _ = build_inputs({"ids": Spec(np.dtype("int32"), (None, 4096))}, 2, inputs(kind="random"))
    ids = arrays["ids"]
    assert ids.dtype == np.int32 and ids.shape == (2, 4096)
    assert ids.min() < -(2**30) and ids.max() > 2**30  # uniform over int32, not over [0, 255)


def test_zeros_and_free_spatial_dimensions_take_the_image_size():
    arrays, _ = build_inputs(DETECTOR, 1, inputs(kind="zeros", image_size=[20, 30]))
    tensor = arrays["input_tensor"]
    assert tensor.shape == (1, 20, 30, 3) and tensor.dtype == np.uint8
    assert not tensor.any()


def test_several_inputs_are_each_filled():
    signature = {
        "a": Spec(np.dtype("float32"), (None, 5)),
        "b": Spec(np.dtype("int64"), (None,)),
        "c": Spec(np.dtype("bool"), (None, 2)),
    }
    arrays, description = build_inputs(signature, 4, inputs(kind="random", seed=1))
    assert {name: array.shape for name, array in arrays.items()} == {"a": (4, 5), "b": (4,), "c": (4, 2)}
    assert arrays["c"].dtype == np.bool_
    assert description["shapes"] == {"a": [4, 5], "b": [4], "c": [4, 2]}


def test_skimage_photos_fill_a_detector_input():
    arrays, description = build_inputs(DETECTOR, 1, inputs(kind="images", image_size=[64, 48]))
    tensor = arrays["input_tensor"]
    assert tensor.shape == (1, 64, 48, 3) and tensor.dtype == np.uint8
    assert tensor.std() > 10  # a photo, not a constant
    assert description["images"] == [f"skimage.data.{name}" for name in SKIMAGE_PHOTOS]


def test_photos_are_cycled_through_a_batch_and_cast_to_float():
    count = len(SKIMAGE_PHOTOS)
    arrays, _ = build_inputs(CLASSIFIER, count + 1, inputs(kind="images"))
    images = arrays["images"]
    assert images.shape == (count + 1, 8, 8, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 255.0
    np.testing.assert_array_equal(images[count], images[0])  # the set starts over
    assert not np.array_equal(images[0], images[1])  # different photos


def test_photos_from_a_folder_are_resized_and_sorted(tmp_path):
    # Solid colours survive resizing unchanged, so the values say which file went where.
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (17, 23), (10, 200, 10)).save(tmp_path / "b.jpg", quality=100)
    (tmp_path / "notes.txt").write_text("not an image")
    arrays, description = build_inputs(CLASSIFIER, 3, inputs(kind="images", image_dir=str(tmp_path)))
    images = arrays["images"]
    assert images.shape == (3, 8, 8, 3)
    np.testing.assert_allclose(images[0].mean(axis=(0, 1)), [200, 10, 10], atol=3)
    np.testing.assert_allclose(images[1].mean(axis=(0, 1)), [10, 200, 10], atol=3)
    np.testing.assert_array_equal(images[2], images[0])
    assert description["images"] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]


@pytest.mark.parametrize(
    "signature, batch, settings, message, fix",
    [
        (
            {"text": Spec(np.dtype(object), (None,))},
            1,
            inputs(kind="random"),
            "'text' has dtype object (string)",
            "numeric tensors",
        ),
        (DETECTOR, 4, inputs(kind="random", image_size=[8, 8]), "fixed batch dimension of 1", "batch_sizes to [1]"),
        (
            {"x": Spec(np.dtype("float32"), (None, None))},
            1,
            inputs(kind="random"),
            "unknown dimension at position 1",
            "fixed",
        ),
        ({"x": Spec(np.dtype("float32"), ())}, 1, inputs(kind="random"), "scalar", "batch dimension"),
        (
            {"x": Spec(np.dtype("float32"), (None, 5))},
            1,
            inputs(kind="images"),
            "[batch, height, width, channels]",
            "kind random or zeros",
        ),
        (
            {"x": Spec(np.dtype("float32"), (None, 4, 4, 5))},
            1,
            inputs(kind="images"),
            "1 or 3 channels",
            "kind random or zeros",
        ),
    ],
)
def test_inputs_that_cannot_be_filled_are_clear_errors(signature, batch, settings, message, fix):
    with pytest.raises(ServeprofError) as caught:
        build_inputs(signature, batch, settings)
    assert message in caught.value.problem
    assert fix in caught.value.fix


def test_image_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "readme.txt").write_text("no photos here")
    with pytest.raises(ServeprofError, match="holds no images"):
        build_inputs(CLASSIFIER, 1, inputs(kind="images", image_dir=str(tmp_path)))


@pytest.mark.parametrize(
    "text, message",
    [
        ("{kind: random}", "not valid JSON"),
        ('{"kind": "noise"}', "measure.input.kind"),
        ('{"seed": -1}', "measure.input.seed"),
        ('{"image_size": [512]}', "measure.input.image_size"),
        ('{"colour": "red"}', "unknown key(s) 'colour'"),
    ],
)
def test_bad_input_settings_are_refused(text, message):
    with pytest.raises(ServeprofError) as caught:
        input_settings(json_object(text, "--input", "{}"))
    assert message in caught.value.problem


def test_input_settings_from_the_workflow():
    settings = input_settings(
        json_object('{"image_dir":null,"image_size":[331,331],"kind":"random","seed":3}', "--input", "{}")
    )
    assert settings == InputSettings(kind="random", seed=3, image_dir=None, image_size=(331, 331))


def test_a_free_height_and_width_default_to_the_schemas_image_size():
    assert SCHEMA_INPUT["image_size"] == [512, 512]
    arrays, description = build_inputs(DETECTOR, 1, inputs(kind="zeros"))
    assert arrays["input_tensor"].shape == (1, 512, 512, 3)
    assert description["image_size"] == [512, 512]


def test_missing_keys_take_the_schemas_defaults_and_auto_is_resolved_by_model_type():
    assert SCHEMA_INPUT["kind"] == "auto" and SCHEMA_INPUT["seed"] == 0
    for block in ({}, {"kind": "auto"}):
        assert input_settings(block) == InputSettings(kind="auto", seed=0, image_dir=None, image_size=(512, 512))
    settings = inputs(kind="auto", seed=4, image_size=[64, 48])
    assert settings.resolved("detection") == InputSettings(kind="images", seed=4, image_dir=None, image_size=(64, 48))
    assert settings.resolved("classification") == InputSettings(
        kind="random", seed=4, image_dir=None, image_size=(64, 48)
    )
    assert inputs(kind="zeros").resolved("detection").kind == "zeros"  # only auto is resolved
    with pytest.raises(ServeprofError, match="'segmentation' is not one of classification, detection"):
        settings.resolved("segmentation")


def test_an_unresolved_auto_is_refused_when_inputs_are_built():
    with pytest.raises(ServeprofError) as caught:
        build_inputs(CLASSIFIER, 1, inputs(kind="auto"))
    assert "unresolved" in caught.value.problem and "--type" in caught.value.fix


def test_the_model_type_is_read_from_the_signatures_outputs():
    assert model_type_of({"detection_boxes": None, "detection_scores": None, "num_detections": None}) == "detection"
    assert model_type_of({"num_detections": None}) == "detection"
    assert model_type_of({"probabilities": None}) == "classification"
    assert model_type_of({}) == "classification"
