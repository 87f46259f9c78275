"""``serveprof export`` end to end: acquire and export run as subprocesses, the result is loaded with TensorFlow.

Small models only (MobileNetV2 at 32x32, the tiny zoo-shaped detector and classifier),
so the module runs in about two minutes (every export ends with a servability check in a fresh process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_models import (
    export_keras_model_in_a_module,
    export_tiny_classifier,
    export_zoo_style_detector,
    make_zoo_tarball,
)

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def serveprof(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serveprof", *args],
        cwd=workdir,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def acquire_and_export(
    workdir: Path, model: str, spec: dict, *options: str
) -> tuple[subprocess.CompletedProcess, Path]:
    acquired = f"data/model/acquired/{model}.json"
    run = serveprof(
        workdir,
        "acquire",
        "--model",
        model,
        "--spec",
        json.dumps(spec),
        "--download-dir",
        "data/model/download",
        "--out",
        acquired,
    )
    assert run.returncode == 0, run.stderr
    out = workdir / "data" / "model" / "inference" / model / "1"
    return serveprof(
        workdir,
        "export",
        "--model",
        model,
        "--spec",
        json.dumps(spec),
        "--acquired",
        acquired,
        "--out",
        str(out),
        *options,
    ), out


def serving(path: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(path)).signatures["serving_default"]


def inputs_of(signature) -> dict:
    _, specs = signature.structured_input_signature
    return {name: (spec.dtype.name, spec.shape.as_list()) for name, spec in specs.items()}


@pytest.mark.slow  # about 40 s on the shared 2-core machine (export alone about 25 s)
def test_keras_application_has_a_named_signature_and_stores_variables_once(tmp_path):
    import keras
    from tensorflow_serving.apis import prediction_log_pb2

    run, out = acquire_and_export(
        tmp_path,
        "tiny_keras",
        {
            "source": "keras",
            "type": "classification",
            "application": "MobileNetV2",
            "input_size": [32, 32],
            "weights": "random",
        },
        "--warmup-batch-sizes",
        "4,1",
    )
    assert run.returncode == 0, run.stderr
    assert "saving SavedModel" in run.stderr and "done in" in run.stderr
    assert "servability check (Session loader, batch-2 request to serving_default, fresh process): done" in run.stderr
    import tensorflow as tf

    records = [
        prediction_log_pb2.PredictionLog.FromString(record)
        for record in tf.compat.v1.io.tf_record_iterator(str(out / "assets.extra" / "tf_serving_warmup_requests"))
    ]
    assert [tf.make_ndarray(record.predict_log.request.inputs["images"]).shape for record in records] == [
        (1, 32, 32, 3),
        (4, 32, 32, 3),
    ]
    signature = serving(out)
    assert inputs_of(signature) == {"images": ("float32", [None, 32, 32, 3])}
    assert "keras_tensor" not in (out / "saved_model.pb").read_bytes().decode("latin-1")
    predictions = signature(images=np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32))["predictions"]
    assert predictions.shape == (2, 1000)
    np.testing.assert_allclose(predictions.numpy().sum(axis=1), 1.0, rtol=1e-4)

    parameter_bytes = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3)).count_params() * 4
    stored = sum(part.stat().st_size for part in (out / "variables").glob("variables.data-*"))
    assert 0.95 < stored / parameter_bytes < 1.2, (stored, parameter_bytes)  # Keras's model.export() stores ~2x


@pytest.fixture(scope="module")
def zoo_tarball(tmp_path_factory) -> Path:
    return make_zoo_tarball(tmp_path_factory.mktemp("zoo") / "tiny_zoo.tar.gz", "tiny_zoo")


def original_zoo_signature(tarball: Path, scratch: Path):
    with tarfile.open(tarball) as archive:
        archive.extractall(scratch, filter="data")
    return serving(scratch / "tiny_zoo" / "saved_model")


def assert_batches_equal_per_image_calls(batched, per_image, input_name: str) -> None:
    images = np.random.default_rng(1).integers(0, 256, size=(4, 12, 16, 3), dtype=np.uint8)
    singles = [per_image(**{input_name: images[i : i + 1]}) for i in range(4)]
    for batch in (1, 2, 4):
        outputs = batched(**{input_name: images[:batch]})
        assert sorted(outputs) == sorted(singles[0])
        for key, value in outputs.items():
            expected = np.concatenate([single[key].numpy() for single in singles[:batch]])
            assert value.shape[0] == batch, key
            np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6, err_msg=key)
    # the outputs depend on the image, so equal outputs are not a coincidence
    assert not np.allclose(singles[0]["detection_boxes"].numpy(), singles[1]["detection_boxes"].numpy())


def test_zoo_model_is_batch_wrapped_and_matches_per_image_calls(tmp_path, zoo_tarball):
    staged = tmp_path / "data" / "model" / "download" / "tiny_zoo.tar.gz"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(zoo_tarball.read_bytes())
    run, out = acquire_and_export(
        tmp_path, "tiny_zoo", {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_zoo.tar.gz"}
    )
    assert run.returncode == 0, run.stderr
    batched = serving(out)
    assert inputs_of(batched) == {"input_tensor": ("uint8", [None, None, None, 3])}
    assert_batches_equal_per_image_calls(
        batched, original_zoo_signature(zoo_tarball, tmp_path / "original"), "input_tensor"
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["1"]  # no extraction or build folders left


def test_a_failed_export_leaves_no_version_folder(tmp_path, zoo_tarball):
    staged = tmp_path / "data" / "model" / "download" / "tiny_zoo.tar.gz"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(zoo_tarball.read_bytes())
    spec = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_zoo.tar.gz"}
    run = serveprof(tmp_path, "acquire", "--model", "z", "--spec", json.dumps(spec), "--out", "acquired.json")
    assert run.returncode == 0, run.stderr
    staged.write_bytes(zoo_tarball.read_bytes()[:2000])  # damaged after acquisition
    out = tmp_path / "inference" / "z" / "1"
    run = serveprof(
        tmp_path, "export", "--model", "z", "--spec", json.dumps(spec), "--acquired", "acquired.json", "--out", str(out)
    )
    assert run.returncode == 1
    assert "truncated or corrupt" in run.stderr
    assert list(out.parent.iterdir()) == []


def test_unacquired_model_is_refused(tmp_path):
    (tmp_path / "acquired.json").write_text(
        json.dumps({"status": "unavailable", "source": "tf2_zoo", "reason": "offline", "fix": "stage it"})
    )
    spec = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/x.tar.gz"}
    run = serveprof(
        tmp_path, "export", "--model", "x", "--spec", json.dumps(spec), "--acquired", "acquired.json", "--out", "out/1"
    )
    assert run.returncode == 1 and "model x was not acquired: offline" in run.stderr and "fix: stage it" in run.stderr
    assert not (tmp_path / "out").exists()


def test_batchable_saved_model_is_copied_into_the_highest_version(tmp_path):
    base = tmp_path / "mine"
    export_tiny_classifier(base / "1", seed=1)
    export_tiny_classifier(base / "2", seed=2)
    run, out = acquire_and_export(tmp_path, "mine", {"source": "saved_model", "type": "classification", "path": "mine"})
    assert run.returncode == 0, run.stderr
    assert "already takes a batch" in run.stderr
    assert (out / "saved_model.pb").read_bytes() == (base / "2" / "saved_model.pb").read_bytes()
    images = np.random.default_rng(2).random((3, 8, 8, 3), dtype=np.float32)
    np.testing.assert_array_equal(
        serving(out)(images=images)["probabilities"], serving(base / "2")(images=images)["probabilities"]
    )


def test_saved_model_with_a_fixed_batch_is_rewrapped(tmp_path):
    export_zoo_style_detector(tmp_path / "detector")
    run, out = acquire_and_export(
        tmp_path,
        "det",
        {"source": "saved_model", "type": "detection", "path": "detector", "signature": "serving_default"},
    )
    assert run.returncode == 0, run.stderr
    assert "batch-wrapped" in run.stderr
    batched = serving(out)
    assert inputs_of(batched) == {"input_tensor": ("uint8", [None, None, None, 3])}
    assert_batches_equal_per_image_calls(batched, serving(tmp_path / "detector"), "input_tensor")


def test_a_missing_signature_names_the_ones_there(tmp_path):
    export_tiny_classifier(tmp_path / "clf")
    run, out = acquire_and_export(
        tmp_path, "clf", {"source": "saved_model", "type": "classification", "path": "clf", "signature": "predict"}
    )
    assert run.returncode == 1
    assert "has no signature 'predict'; it has ['serving_default']" in run.stderr
    assert not out.exists()


def test_an_export_tensorflow_model_server_could_not_serve_fails_and_publishes_nothing(tmp_path):
    """The servability check loads the result as TF Serving does and runs one batch-2 request."""
    export_keras_model_in_a_module(tmp_path / "keras_in_module")
    run, out = acquire_and_export(
        tmp_path, "kim", {"source": "saved_model", "type": "classification", "path": "keras_in_module"}
    )
    assert run.returncode == 1, run.stderr
    assert "the exported SavedModel would not be served by tensorflow_model_server" in run.stderr
    assert "Could not find variable" in run.stderr and "keras.export.ExportArchive" in run.stderr
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_warmup_records_need_a_size_where_the_signature_leaves_it_open(tmp_path, zoo_tarball):
    staged = tmp_path / "data" / "model" / "download" / "tiny_zoo.tar.gz"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(zoo_tarball.read_bytes())
    spec = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_zoo.tar.gz"}
    run, out = acquire_and_export(tmp_path, "tiny_zoo", spec, "--warmup-batch-sizes", "2")
    assert run.returncode == 1 and "input 'input_tensor' has shape [-1, -1, -1, 3]" in run.stderr
    assert "fix:" in run.stderr and not out.exists()
    run = serveprof(
        tmp_path,
        "export",
        "--model",
        "tiny_zoo",
        "--spec",
        json.dumps(spec),
        "--acquired",
        "data/model/acquired/tiny_zoo.json",
        "--out",
        str(out),
        "--warmup-batch-sizes",
        "2",
        "--warmup-input-shape",
        "input_tensor=12,16,3",
    )
    assert run.returncode == 0, run.stderr
    assert (out / "assets.extra" / "tf_serving_warmup_requests").stat().st_size > 2 * 12 * 16 * 3
