"""``serveprof profile-layers`` on a Keras model with one heavy layer, exported as serveprof exports Keras models.

The model: a 1024-wide Dense layer (``heavy``, a 1024 × 1024 matmul per item) between
cheap ones. Its export goes through keras.export.ExportArchive like
serveprof/models/keras_export.py's, in a subprocess that also prints Keras's own
parameter count per layer.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from serveprof.errors import ServeprofError
from serveprof.measure.inputs import InputSettings
from serveprof.profile.layers import blocks
from serveprof.profile.run import profile
from tests.fixtures.embedded_server import REPO, server_env

EXPORT = """
import json, sys
import keras, tensorflow as tf
inputs = keras.Input((1024,), name="features")
x = keras.layers.Dense(16, name="block1_light")(inputs)
x = keras.layers.BatchNormalization(name="block1_bn")(x)
x = keras.layers.Dense(1024, name="block2_widen")(x)
x = keras.layers.Dense(1024, name="block2_heavy")(x)
outputs = keras.layers.Dense(3, activation="softmax", name="top_predictions")(x)
model = keras.Model(inputs, outputs)
archive = keras.export.ExportArchive()
archive.add_endpoint(
    name="serving_default",
    fn=lambda features: {"probabilities": model(features, training=False)},
    input_signature=[tf.TensorSpec([None, 1024], tf.float32, name="features")],
)
archive.write_out(sys.argv[1], verbose=False)
print(json.dumps({layer.name: layer.count_params() for layer in model.layers if layer.count_params()}))
"""


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    base = tmp_path_factory.mktemp("heavy") / "heavy"
    export = subprocess.run(
        [sys.executable, "-c", EXPORT, str(base / "1")], env=server_env(), capture_output=True, text=True, timeout=300
    )
    assert export.returncode == 0, export.stderr[-3000:]
    keras_counts = json.loads(export.stdout.strip().splitlines()[-1])
    out = base.parent / "profile"
    run = subprocess.run(
        [
            sys.executable, "-m", "serveprof", "profile-layers", "--model-base-path", str(base),
            "--batch-size", "32", "--warmup", "3", "--iterations", "30", "--top", "5",
            "--input", '{"kind": "random"}', "--out-dir", str(out),
        ],
        cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return keras_counts, out


def test_the_heavy_layer_and_its_matmul_take_most_of_the_time(profiled):
    _, out = profiled
    layers = pd.read_csv(out / "layers.csv")
    ops = pd.read_csv(out / "ops.csv")
    heavy = layers[layers["layer"] == "block2_heavy"].iloc[0]
    # Two 1024x1024 matmuls (widen, heavy) against a 1024x16, a 16x1024 and a 1024x3 one.
    assert heavy["share_pct"] > 25, layers.head()
    assert layers.iloc[0]["layer"] in ("block2_heavy", "block2_widen"), layers.head()
    assert "MatMul" in ops.iloc[0]["op"] and ops.iloc[0]["share_pct"] > 50, ops.head()
    assert layers["share_pct"].sum() == pytest.approx(100.0, abs=0.01)
    assert (layers["std_ms"] >= 0).all() and (layers["mean_ms"] > 0).any()


def test_parameter_counts_equal_keras_own_and_blocks_group_layers(profiled):
    keras_counts, out = profiled
    layers = pd.read_csv(out / "layers.csv").set_index("layer")
    assert {name: int(layers.loc[name, "params"]) for name in keras_counts} == keras_counts
    blocks_table = pd.read_csv(out / "blocks.csv").set_index("block")
    assert int(blocks_table.loc["block2", "params"]) == keras_counts["block2_widen"] + keras_counts["block2_heavy"]
    assert int(blocks_table.loc["block1", "params"]) == keras_counts["block1_light"] + keras_counts["block1_bn"]


def test_the_tracing_overhead_is_measured_and_stated(profiled):
    _, out = profiled
    summary = json.loads((out / "profile.json").read_text())
    assert summary["iterations"] == 30 and summary["warmup"] == 3
    assert summary["wall_traced_ms"] > 0 and summary["wall_untraced_ms"] > 0
    expected = 100 * (summary["wall_traced_ms"] / summary["wall_untraced_ms"] - 1)
    assert summary["tracing_overhead_pct"] == pytest.approx(expected)
    text = (out / "breakdown.md").read_text()
    assert "tracing costs" in text and "## Top 5 layers" in text
    assert (out / "blocks.png").stat().st_size > 1000


def test_a_tflite_model_is_refused_with_the_reason(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"TFL3")
    with pytest.raises(ServeprofError, match="TFLite model") as refused:
        profile(tmp_path, 1, InputSettings("random", 0, None, (8, 8)))
    assert "benchmark_model" in refused.value.fix


def test_blocks_follow_keras_names_and_unnamed_layers_join_the_one_before():
    order = ["Conv1", "bn_Conv1", "block_1_expand", "block_1_expand_relu", "add", "block_2_project", "(function calls)"]
    assert blocks(order) == {
        "Conv1": "Conv1",
        "bn_Conv1": "Conv1",
        "block_1_expand": "block_1",
        "block_1_expand_relu": "block_1",
        "add": "block_1",
        "block_2_project": "block_2",
        "(function calls)": "(function calls)",
    }
