"""The variants report from result files alone: throughput tables, speed-ups, accuracy, variants not built."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from serveprof import settings
from serveprof.variants.accuracy import weights_note
from serveprof.variants.report import write

SUMMARY = "model,batch_size,mean_ms,throughput_per_s\n{model},1,{b1},{t1}\n{model},8,{b8},{t8}\n"


def summary(path: Path, model: str, mean_1: float, mean_8: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = SUMMARY.format(model=model, b1=mean_1, t1=1000 / mean_1, b8=mean_8, t8=8000 / mean_8)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path) -> Path:
    summary(tmp_path / "workload/profiling/net/summary.csv", "net", 10.0, 40.0)
    summary(tmp_path / "workload/variants/fp16/profiling/net/summary.csv", "net", 5.0, 10.0)
    (tmp_path / "workload/variants/fp16/profiling/net/accuracy.json").write_text(
        json.dumps(
            {
                "outputs": {"probabilities": {"max_abs_diff": 0.002, "mean_abs_diff": 0.0001}},
                "type": "classification",
                "classification": {"top1_agreement": 0.98, "top5_agreement": 1.0},
                "weights_note": weights_note("random"),
            }
        )
    )
    statuses = tmp_path / "data/model/variants/net"
    statuses.mkdir(parents=True)
    (statuses / "fp16.json").write_text(json.dumps({"status": "ok"}))
    (statuses / "int8.json").write_text(
        json.dumps(
            {"status": "unavailable", "reason": "no int8 kernel for NonMaxSuppressionV5", "fix": "profile others"}
        )
    )
    return tmp_path


def test_speedups_are_against_fp32_at_the_same_batch_size(tree):
    variants = {"net": ["fp32", "fp16", "int8"]}
    written = write(tree / "workload", tree / "data/model/variants", variants, tree / "out", settings.style())
    speed = pd.read_csv(written["throughput"])
    fp16 = speed[speed["variant"] == "fp16"].set_index("batch_size")["speedup"]
    assert fp16[1] == pytest.approx(2.0) and fp16[8] == pytest.approx(4.0)
    assert speed[speed["variant"] == "fp32"]["speedup"].tolist() == [1.0, 1.0]
    accuracy = pd.read_csv(written["accuracy"]).set_index("variant")
    assert accuracy.loc["fp16", "median_speedup"] == pytest.approx(3.0)
    assert accuracy.loc["fp16", "top1_agreement"] == 0.98
    assert accuracy.loc["int8", "status"] == "unavailable"
    report = written["report"].read_text()
    assert "| net | 100 | 200 (2.00×) | – |" in report  # batch 1: fp32, fp16, int8 not built
    assert "## Variants not profiled" in report and "no int8 kernel for NonMaxSuppressionV5" in report
    assert "random weights" in report and "carry no meaning" in report
    assert all(written[f"figure {ext}"].stat().st_size > 1000 for ext in settings.style().formats)
