"""Variants of the tiny classifier: built by ``serveprof export-variant``'s code, served by real ``serveprof serve``.

The builds run once per session in one subprocess (TensorFlow stays out of pytest);
each ends with the servability check in a fresh process, as the workflow's do. The
served answers are compared with the fp32 model's, served by the session's server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serveprof.client import GrpcClient
from serveprof.errors import ServeprofError
from serveprof.measure.procedure import ProcedureSettings, measure_series
from serveprof.server.servable import find_served_version
from serveprof.variants import accuracy
from serveprof.variants.catalog import server_flags, serving_problem, variant
from tests.fixtures.embedded_server import REPO, TINY_IMAGE_SIZE, running_server, server_env, wait_until_available

PROCEDURE = ProcedureSettings(requests=5, max_seconds=10, min_requests=5, warmup_requests=1,
                              warmup_max_seconds=5, resource_interval_s=0.05)  # fmt: skip
CPU_VARIANTS = ("frozen", "fp16", "bf16", "int8", "int8_dynamic", "xla")
BUILD = """
import json, sys
from pathlib import Path
from serveprof.measure.inputs import InputSettings
from serveprof.variants.export import calibration_inputs, export_variant
reference, out = Path(sys.argv[1]), Path(sys.argv[2])
inputs = InputSettings("random", 0, None, (8, 8))
statuses = {}
for name in sys.argv[3:]:
    statuses[name] = export_variant(
        "tiny", name, reference, out / name, calibration=lambda: calibration_inputs(reference, inputs, 16)
    )
print(json.dumps(statuses))
"""


@pytest.fixture(scope="module")
def built(tiny_classifier_base, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("variants")
    run = subprocess.run(
        [sys.executable, "-c", BUILD, str(tiny_classifier_base / "1"), str(out), *CPU_VARIANTS, "tftrt"],
        cwd=REPO,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out, json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    """What the accuracy set and the timed requests send: the input builder's seeded floats in [0, 255)."""
    from serveprof.client import TensorInfo
    from serveprof.measure.inputs import InputSettings, build_inputs

    shape = [None, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3]
    arrays, _ = build_inputs(
        {"images": TensorInfo(np.dtype("float32"), tuple(shape))}, 6, InputSettings("random", 0, None, (8, 8))
    )
    return arrays["images"]


def test_every_cpu_variant_is_built_and_passes_the_servability_check(built):
    out, statuses = built
    for name in CPU_VARIANTS:
        status = statuses[name]
        assert status["status"] == "ok", status
        assert any(note.startswith("servable: outputs {'probabilities': [2, 3]}") for note in status["notes"])
        version = out / name / "1"
        if variant(name).format == "tflite":
            assert sorted(path.name for path in version.iterdir()) == ["model.tflite"]
            assert status["server_flags"] == ["--prefer_tflite_model=true"]
        else:
            assert (version / "saved_model.pb").is_file()
        assert status["size_bytes"] == sum(path.stat().st_size for path in version.rglob("*") if path.is_file())
    # fp16 and bf16 keep weights in the lower type: the graph says how many nodes moved, and casts at the edges.
    assert "nodes in float16" in statuses["fp16"]["notes"][1]
    assert "casts at the boundaries" in statuses["fp16"]["notes"][1]
    assert "nodes in bfloat16" in statuses["bf16"]["notes"][1]


def test_tftrt_is_refused_without_a_gpu_and_tensorrt(built):
    out, statuses = built
    status = statuses["tftrt"]
    assert status["status"] == "unavailable"
    assert "TensorRT" in status["reason"] or "TF-TRT" in status["reason"]
    assert "GPU" in status["fix"] and "remove tftrt" in status["fix"]
    assert not (out / "tftrt" / "1").exists()  # nothing half-built looks like a model
    # And the config check refuses it before any job when server.gpu is false.
    problem = serving_problem("tftrt", gpu=False)
    assert problem is not None and "needs a GPU with TensorRT" in problem[0] and "server.gpu" in problem[1]
    assert serving_problem("int8", gpu=True) is not None  # TFLite runs on the CPU only in TF Serving
    assert serving_problem("fp16", gpu=False) is None
    with pytest.raises(ServeprofError, match="unknown variant"):
        variant("int4")


def predict(target: str, inputs: dict) -> dict:
    with GrpcClient(target, "tiny") as client:
        return client.predict(inputs)


def test_the_embedded_server_serves_and_measures_each_variant_close_to_fp32(built, embedded_server, batch, tmp_path):
    out, _ = built
    reference = predict(embedded_server.grpc_target, {"images": batch})["probabilities"]
    # Inputs in [0, 0.5) keep the softmax off its saturation, where float16's rounding shows.
    small = batch / np.float32(510.0)
    small_reference = predict(embedded_server.grpc_target, {"images": small})["probabilities"]
    tolerances = {"frozen": 1e-6, "xla": 1e-5, "fp16": 5e-3, "bf16": 0.05, "int8": 0.08, "int8_dynamic": 0.08}
    servers = {}
    for name in tolerances:
        flags = server_flags(name, gpu=False)
        servers[name] = running_server(out / name, *flags, log_dir=tmp_path, rest=False, wait=False)
    started = {name: context.__enter__() for name, context in servers.items()}
    try:
        for name, server in started.items():
            wait_until_available(server)
            answer = predict(server.grpc_target, {"images": batch})["probabilities"]
            assert answer.dtype == np.float32 and answer.shape == reference.shape  # the signature's dtype kept
            difference = float(np.abs(answer - reference).max())
            assert difference <= tolerances[name], (name, difference)
            delta = accuracy.compare({"probabilities": reference}, {"probabilities": answer})
            print(f"{name}: max |answer - fp32| {difference:.2e}")  # the figures docs/variants.md quotes
            if name in ("fp16", "bf16"):
                # fp16 and bf16 really compute in the lower type: close to fp32, and not bit-equal to it.
                answer = predict(server.grpc_target, {"images": small})["probabilities"]
                difference = float(np.abs(answer - small_reference).max())
                assert 0 < difference <= tolerances[name], difference
            assert delta["type"] == "classification"
            assert delta["classification"]["top5_agreement"] == 1.0  # three classes: always in the top 5
            # And measured by the procedure the workflow's jobs run, a few requests each.
            with GrpcClient(server.grpc_target, "tiny") as client:
                _, fields = measure_series(client.predict, {"images": batch}, len(batch), PROCEDURE, pid=server.pid,
                                           on_error=lambda error, what: error, log=lambda line: None)  # fmt: skip
            assert fields["stats"]["count"] == PROCEDURE.requests and fields["stats"]["mean_ms"] > 0, name
            assert fields["resources"]["rss_peak_mb"] > 0, name
        for name in ("int8", "int8_dynamic"):
            log = started[name].log()
            assert "TFLite model" in log and "interpreter" in log
    finally:
        for context in servers.values():
            context.__exit__(None, None, None)


def test_xla_needs_the_xla_flag_and_tflite_needs_prefer_tflite_model(built, tmp_path):
    out, _ = built
    # As tensorflow_model_server: XLA's JIT is off unless asked, so the xla SavedModel is refused at load.
    log = tmp_path / "xla.log"
    with open(log, "wb") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "serveprof", "serve", "--model_name=tiny", f"--model_base_path={out / 'xla'}"],
            cwd=REPO,
            env=server_env(),
            stdout=sink,
            stderr=subprocess.STDOUT,
            timeout=180,
        )
    assert done.returncode != 0
    assert "--xla_cpu_compilation_enabled=true" in log.read_text()
    # A version holding only model.tflite is servable only with --prefer_tflite_model.
    with pytest.raises(ServeprofError, match="holds model.tflite and no saved_model.pb") as refused:
        find_served_version(out / "int8")
    assert "--prefer_tflite_model=true" in refused.value.fix
    assert find_served_version(out / "int8", prefer_tflite=True) == (1, out / "int8" / "1")


def test_classification_agreement_counts_top1_and_top5():
    reference = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    variant_scores = np.array([[0.1, 0.6, 0.3], [0.3, 0.5, 0.2], [0.2, 0.3, 0.5]])
    agreement = accuracy.classification_agreement(reference, variant_scores)
    assert agreement["top1_agreement"] == pytest.approx(2 / 3)
    assert agreement["top5_agreement"] == 1.0 and agreement["top5_of"] == 3


def test_detection_agreement_matches_boxes_of_the_same_class():
    boxes = np.array([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0, 0, 0, 0]]], dtype=np.float32)
    reference = {
        "detection_boxes": boxes,
        "detection_scores": np.array([[0.9, 0.8, 0.1]], dtype=np.float32),
        "detection_classes": np.array([[1.0, 2.0, 3.0]], dtype=np.float32),
    }
    # The variant found the first box shifted (IoU 0.6 / (0.5 + 0.25 - ...)), the second under another class.
    shifted = np.array([[[0.0, 0.1, 0.5, 0.6], [0.5, 0.5, 1.0, 1.0], [0, 0, 0, 0]]], dtype=np.float32)
    variant_answer = {
        "detection_boxes": shifted,
        "detection_scores": np.array([[0.85, 0.8, 0.1]], dtype=np.float32),
        "detection_classes": np.array([[1.0, 4.0, 3.0]], dtype=np.float32),
    }
    result = accuracy.compare(reference, variant_answer)
    assert result["type"] == "detection"
    found = result["detection"]
    assert found["boxes"] == 2  # the 0.1 box is under the score threshold
    expected_iou = (0.5 * 0.4) / (0.25 + 0.25 - 0.5 * 0.4)
    assert found["mean_iou"] == pytest.approx((expected_iou + 0.0) / 2, abs=1e-6)
    assert found["matched_share"] == 0.5
    assert found["mean_abs_score_diff"] == pytest.approx((0.05 + 0.8) / 2, abs=1e-6)


def test_random_weights_are_flagged():
    assert "no meaning" in accuracy.weights_note("random")
    assert accuracy.weights_note("imagenet") is None
