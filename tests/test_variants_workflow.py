"""Variants in the real workflow: one bounded snakemake run with fp32 and int8 on the tiny classifier.

int8 is the variant that differs most from fp32 on the way through (a TFLite model, a
server flag, a calibration set), so it is the one run for real here; tests/test_variants.py
serves the others. The default config and a tftrt config are checked by dry runs.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.workflow_runner import run_workflow, write_config

pytestmark = pytest.mark.slow

MEASURE = {"requests": 10, "max_seconds": 3, "min_requests": 2, "warmup_requests": 1, "warmup_max_seconds": 2}
VARIANT_RULES = {
    "export_variant",
    "cold_start_variant",
    "measure_variant_batch",
    "accuracy_variant",
    "aggregate_variant",
    "variants_report",
}


def config(tiny_classifier_base, **extra) -> dict:
    return {
        "models": {
            "tiny_saved": {"source": "saved_model", "type": "classification", "path": str(tiny_classifier_base / "1")}
        },
        "batch_sizes": [1],
        "measure": MEASURE,
        "server": {"backend": "embedded", "startup_timeout_s": 120},
        "plots": {"formats": ["png"], "dpi": 60},
        **extra,
    }


def test_the_default_adds_no_variant_job_and_tftrt_is_refused_before_any(tiny_classifier_base, tmp_path):
    write_config(tmp_path, config(tiny_classifier_base))
    dry = run_workflow(tmp_path, "-n")
    assert dry.returncode == 0, dry.output[-3000:]
    assert "measure_batch" in dry.rules() and not dry.rules() & (VARIANT_RULES | {"profile_layers"}), dry.rules()
    assert "workload/variants" not in dry.output
    write_config(tmp_path, config(tiny_classifier_base, variants=["fp32", "tftrt"]))
    refused = run_workflow(tmp_path, "-n")
    assert refused.returncode != 0 and not refused.jobs
    assert "variant tftrt needs a GPU with TensorRT, and server.gpu is false" in refused.output
    assert "remove tftrt from variants" in refused.output


def test_an_int8_variant_is_exported_served_measured_and_compared(tiny_classifier_base, tmp_path):
    profile = {"batch_sizes": [1], "warmup": 1, "iterations": 5, "top": 3}
    write_config(tmp_path, config(tiny_classifier_base, variants=["fp32", "int8"], profile=profile))
    run = run_workflow(tmp_path)
    assert run.returncode == 0, run.output[-6000:]
    assert {job["variant"] for job in run.jobs_of("measure_variant_batch")} == {"int8"}
    # fp32 keeps the reference layout.
    reference = tmp_path / "workload" / "profiling" / "tiny_saved"
    assert (reference / "tiny_saved-b1.csv").is_file() and (reference / "summary.csv").is_file()
    folder = tmp_path / "workload" / "variants" / "int8" / "profiling" / "tiny_saved"
    assert (folder / "tiny_saved.csv").read_text().splitlines()[0] == "batch_size, duration"
    assert len((folder / "tiny_saved-b1.csv").read_text().split()) >= 2
    stats = json.loads((folder / "stats" / "b1.json").read_text())
    assert "--prefer_tflite_model=true" in stats["server"]["command"]
    status = json.loads((tmp_path / "data" / "model" / "variants" / "tiny_saved" / "int8.json").read_text())
    assert status["status"] == "ok" and status["format"] == "tflite"
    assert (tmp_path / "data/model/inference/tiny_saved/variants/int8/1/model.tflite").is_file()
    accuracy = json.loads((folder / "accuracy.json").read_text())
    assert accuracy["classification"]["items"] == 64
    assert 0 <= accuracy["outputs"]["probabilities"]["max_abs_diff"] < 0.5
    throughput = pd.read_csv(tmp_path / "reports" / "variants" / "throughput.csv")
    assert set(throughput["variant"]) == {"fp32", "int8"}
    assert throughput[throughput["variant"] == "fp32"]["speedup"].tolist() == [1.0]
    report = (tmp_path / "reports" / "variants" / "variants.md").read_text()
    assert "## Batch size 1" in report and "| tiny_saved |" in report and "top-1 agr." in report
    assert (tmp_path / "reports" / "variants" / "speedup.png").stat().st_size > 1000
    assert (tmp_path / "reports" / "variants" / "resources.png").stat().st_size > 1000
    # The per-layer profile: fp32 only, as int8 is a TFLite model with no step stats to break down.
    assert run.jobs_of("profile_layers") == [{"model": "tiny_saved", "variant": "fp32", "batch": "1"}]
    layers = tmp_path / "workload" / "layers" / "fp32" / "tiny_saved" / "b1"
    assert json.loads((layers / "profile.json").read_text())["iterations"] == 5
    assert "MatMul" in " ".join(pd.read_csv(layers / "ops.csv")["op"])
    again = run_workflow(tmp_path)
    assert again.returncode == 0 and again.nothing_to_do, again.output[-3000:]
    # The HTML report holds the variants section and the per-layer breakdown, with their captions.
    html_run = run_workflow(tmp_path, "--report", "reports/report.html")
    assert html_run.returncode == 0 and html_run.jobs == [], html_run.output[-3000:]
    html = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8", errors="replace")
    for text in ("Variants", "variants.md", "speedup.png", "resources.png", "Resources per variant",
                 "Per-layer breakdown", "breakdown.md", "blocks.png"):  # fmt: skip
        assert text in html, text
