"""``serveprof tables`` on the fixture run: every printed number is the CSV's number, rounded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from serveprof.commands.tables import write_tables
from serveprof.errors import ServeprofError
from serveprof.report.numbers import significant
from tests.report_helpers import (
    ACQUIRED,
    ALL_MODELS,
    PROFILED,
    PROFILING,
    assert_printed,
    coldstart,
    copy_renamed,
    parse_table,
    section,
    summary,
)


@dataclass
class Report:
    out: Path
    text: str


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Report:
    out = tmp_path_factory.mktemp("reports")
    write_tables(PROFILING, ACQUIRED, ALL_MODELS, out)
    return Report(out, (out / "report.md").read_text())


def test_cold_start_table_shows_the_coldstart_csv_in_seconds(report):
    rows = parse_table(section(report.text, "Cold start"))
    assert [row["model"] for row in rows] == PROFILED
    for row in rows:
        expected = coldstart(row["model"])
        assert_printed(row["load time (s)"], expected["load_ms"] / 1000)
        assert_printed(row["first infer (s)"], expected["first_infer_ms"] / 1000)
        assert row["type"] == json.loads((ACQUIRED / f"{row['model']}.json").read_text())["type"]


def test_duration_table_follows_the_workload_layout_and_values(report):
    rows = parse_table(section(report.text, "Duration and throughput per batch size"))
    for model in PROFILED:
        expected = summary(model)
        durations = pd.read_csv(PROFILING / model / f"{model}.csv", skipinitialspace=True)
        mine = [row for row in rows if row["model"] == model]
        assert [int(row["batch size"]) for row in mine] == list(expected["batch_size"])
        for row, (_, want), duration in zip(mine, expected.iterrows(), durations["duration"], strict=False):
            assert_printed(row["first init (ms)"], want["first_init_ms"])
            assert_printed(row["first AoT (ms)"], want["first_aot_ms"])
            assert_printed(row["duration (ms)"], duration)
            assert_printed(row["throughput (items/s)"], want["throughput_per_s"])
    # The model name heads its group only, as in the workload's table.
    lines = [
        line
        for line in section(report.text, "Duration and throughput per batch size").splitlines()
        if line.startswith("| ")
    ]
    assert sum(line.startswith("| nasnet |") for line in lines) == 1


def test_compact_table_has_a_time_row_and_a_throughput_row_per_model(report):
    text = section(report.text, "All batch sizes at a glance")
    rows = parse_table(text)
    assert list(rows[0])[-4:] == ["b1/t", "b2/t", "b4/t", "b8/t"]
    for model in PROFILED:
        time_row, rate_row = [row for row in rows if row["model"] == model]
        assert (time_row["unit"], rate_row["unit"]) == ("ms", "items/s")
        expected = summary(model).set_index("batch_size")
        for batch in (1, 2, 4, 8):
            assert_printed(time_row[f"b{batch}/t"], expected.at[batch, "mean_ms"])
            assert_printed(rate_row[f"b{batch}/t"], expected.at[batch, "throughput_per_s"])
        assert_printed(time_row["load (s)"], coldstart(model)["load_ms"] / 1000)


def test_percentile_table_marks_low_sample_tails_and_truncated_series(report):
    text = section(report.text, "Latency percentiles")
    rows = parse_table(text)
    for model in PROFILED:
        expected = summary(model)
        for row, (_, want) in zip([row for row in rows if row["model"] == model], expected.iterrows(), strict=False):
            low = str(want["low_sample_percentiles"]) if isinstance(want["low_sample_percentiles"], str) else ""
            for name in ("p50", "p90", "p99"):
                cell = row[f"{name} (ms)"]
                assert_printed(cell, want[f"{name}_ms"])
                assert cell.endswith("†") == (name in low.split(";")), (model, want["batch_size"], name, cell)
            assert_printed(row["std (ms)"], want["std_ms"])
            assert row["requests"].endswith("‡") == bool(want["truncated"])
            assert str(want["count"]) in row["requests"].replace(",", "")
    # The fixture has both kinds, so both explanations must be printed under the table.
    assert "† too few requests" in text and "‡ series cut short" in text
    nasnet_b8 = [row for row in rows if row["model"] == "nasnet" and row["batch size"] == "8"][0]
    assert nasnet_b8["requests"] == "6 of 700‡"


def test_resource_table_matches_summary_and_omits_absent_gpu(report):
    text = section(report.text, "Server resources")
    rows = parse_table(text)
    assert "GPU (%)" not in rows[0]  # no GPU in the fixture: no empty columns
    for model in PROFILED:
        for row, (_, want) in zip(
            [row for row in rows if row["model"] == model], summary(model).iterrows(), strict=False
        ):
            assert_printed(row["CPU (% of one core)"], want["cpu_util_pct"])
            assert_printed(row["RSS peak (MiB)"], want["rss_peak_mb"])
            assert_printed(row["RSS mean (MiB)"], want["rss_mean_mb"])
    # Resources are sampled in MiB: no "MB" anywhere in the report, and 100 % is one core.
    assert "MB)" not in report.text and "(MiB)" in text and "100 % = one core busy" in text


def test_not_profiled_section_lists_unavailable_models_with_reason_and_fix(report):
    rows = parse_table(section(report.text, "Not profiled"))
    status = json.loads((ACQUIRED / "efficient.json").read_text())
    assert rows == [{"model": "efficient", "reason": status["reason"], "fix": status["fix"]}]
    assert "efficient" not in section(report.text, "Cold start")


def test_random_weights_are_flagged_and_provenance_is_in_the_header(report):
    header = section(report.text, "Provenance")
    rows = parse_table(header[header.index("| model") :])
    weights = {row["model"]: row["weights"] for row in rows}
    assert "random" in weights["nasnet"] and "⚠" in weights["nasnet"]
    assert weights["inception"] == "imagenet" and weights["ssd_mobilenet"] == "zoo"
    assert "Random weights:** nasnet ran with random weights" in report.text
    # Why (the fixture's config asked for random weights: its status has no reason) and how to get ImageNet weights.
    why = parse_table(header[header.index("| model | why random weights") :])
    assert why == [{
        "model": "nasnet",
        "why random weights": "chosen in the config (`weights: random`)",
        "to profile with ImageNet weights": why[0]["to profile with ImageNet weights"],
    }]  # fmt: skip
    assert "set `weights: imagenet`" in why[0]["to profile with ImageNet weights"]
    provenance = json.loads((PROFILING / "inception" / "provenance.json").read_text())
    for fact in (provenance["cpu_model"], f"{provenance['cpu_count']} cores", provenance["tensorflow_version"],
                 provenance["backend_version"], provenance["git_revision"][:12], provenance["config_hash"]):  # fmt: skip
        assert fact in header, fact
    assert "uncommitted changes (nasnet)" in header  # the fixture's nasnet ran from a dirty tree
    assert "| protocol / client transport | grpc / builtin |" in header


def test_random_weights_from_an_offline_fallback_show_the_reason_and_the_fix(tmp_path):
    # What serveprof.models.acquire writes when the ImageNet weights cannot be fetched
    # and allow_random_weights lets the run go on.
    acquired = tmp_path / "acquired"
    shutil.copytree(ACQUIRED, acquired)
    status = json.loads((acquired / "nasnet.json").read_text())
    status.update(
        reason="ImageNet weights NASNet-large.h5 for NASNetLarge could not be fetched from https://example.org/NASNet-large.h5:"
        " URL fetch failure; built with random weights instead (latency of these dense CNNs does not depend on weight values)",
        fix="put NASNet-large.h5 (from https://example.org/NASNet-large.h5) in /home/u/.keras/models/ to profile with ImageNet weights",
    )
    (acquired / "nasnet.json").write_text(json.dumps(status))
    write_tables(PROFILING, acquired, ALL_MODELS, tmp_path / "out")
    header = section((tmp_path / "out" / "report.md").read_text(), "Provenance")
    (row,) = parse_table(header[header.index("| model | why random weights") :])
    assert row["why random weights"] == f"offline fallback: {status['reason']}"
    assert row["to profile with ImageNet weights"].startswith(status["fix"])
    assert row["to profile with ImageNet weights"].endswith(
        "; then rerun the workflow, which acquires and measures the model again"
    )
    models = pd.read_csv(tmp_path / "out" / "tables" / "models.csv").set_index("model")
    assert models.at["nasnet", "reason"] == status["reason"] and models.at["nasnet", "fix"] == status["fix"]


def test_report_names_the_full_key_of_every_shortened_figure_label(tmp_path):
    key = "ssd_mobilenet_v2_320x320_coco17_tpu-8"
    profiling, acquired = copy_renamed("ssd_mobilenet", key, tmp_path)
    write_tables(profiling, acquired, [key, "inception", "nasnet", "efficient"], tmp_path / "out")
    figures = section((tmp_path / "out" / "report.md").read_text(), "Figures")
    assert f"`ssd_mobilenet_v2_320x320` is `{key}`" in figures and "`nasnet` is" not in figures
    # The fixture's own short keys need no such note.
    write_tables(PROFILING, ACQUIRED, ALL_MODELS, tmp_path / "plain")
    assert "shorten" not in section((tmp_path / "plain" / "report.md").read_text(), "Figures")


def test_table_csvs_keep_full_precision(report):
    durations = pd.read_csv(report.out / "tables" / "durations.csv")
    expected = pd.concat([summary(model) for model in PROFILED], ignore_index=True)
    assert list(durations["model"]) == list(expected["model"])
    assert (durations["throughput_per_s"] - expected["throughput_per_s"]).abs().max() < 1e-9
    not_profiled = pd.read_csv(report.out / "tables" / "not_profiled.csv")
    assert list(not_profiled["model"]) == ["efficient"]
    models = pd.read_csv(report.out / "tables" / "models.csv").set_index("model")
    assert models.at["nasnet", "weights"] == "random" and models.at["efficient", "status"] == "unavailable"
    efficient = json.loads((ACQUIRED / "efficient.json").read_text())
    assert models.at["efficient", "reason"] == efficient["reason"] and models.at["efficient", "fix"] == efficient["fix"]
    for name in ("coldstart", "durations", "compact", "percentiles", "resources", "not_profiled"):
        assert (report.out / "tables" / f"{name}.md").read_text().startswith("### ")


def test_cli_runs_as_a_subprocess_and_names_a_missing_result_file(tmp_path):
    results = tmp_path / "profiling"
    shutil.copytree(PROFILING, results)
    command = [sys.executable, "-m", "serveprof", "tables", "--results", str(results), "--acquired-dir", str(ACQUIRED),
               "--models", *ALL_MODELS, "--out", str(tmp_path / "reports")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "reports" / "report.md").is_file()

    (results / "inception" / "coldstart.csv").unlink()
    (tmp_path / "reports" / "report.md").unlink()
    failed = subprocess.run(command, capture_output=True, text=True)
    assert failed.returncode == 1
    assert "inception/coldstart.csv does not exist" in failed.stderr and "fix:" in failed.stderr
    assert not (tmp_path / "reports" / "report.md").exists()  # nothing half-written looks valid


def test_a_model_without_acquisition_status_is_an_error(tmp_path):
    with pytest.raises(ServeprofError, match="no acquisition status for model 'ghost'") as error:
        write_tables(PROFILING, ACQUIRED, [*ALL_MODELS, "ghost"], tmp_path)
    assert "snakemake" in error.value.fix


def test_a_summary_missing_contract_columns_is_refused(tmp_path):
    results = tmp_path / "profiling"
    shutil.copytree(PROFILING, results)
    frame = pd.read_csv(results / "nasnet" / "summary.csv").drop(columns=["p99_ms"])
    frame.to_csv(results / "nasnet" / "summary.csv", index=False)
    with pytest.raises(ServeprofError, match="lacks the column.*p99_ms"):
        write_tables(results, ACQUIRED, ALL_MODELS, tmp_path / "out")


def test_only_unavailable_models_still_gives_a_report(tmp_path):
    write_tables(PROFILING, ACQUIRED, ["efficient"], tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "No model was profiled" in text
    assert parse_table(section(text, "Not profiled"))[0]["model"] == "efficient"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1544.23, "1,544"),
        (15.27, "15.3"),
        (0.51234, "0.512"),
        (9.996, "10.0"),
        (99.96, "100"),
        (0.0, "0"),
        (float("nan"), "–"),
        (None, "–"),
        (123456.7, "123,457"),
        (-2.345, "-2.35"),
    ],  # fmt: skip
)
def test_significant_digits(value, text):
    assert significant(value) == text


def test_cell_text_cannot_break_a_markdown_row(tmp_path):
    acquired = tmp_path / "acquired"
    shutil.copytree(ACQUIRED, acquired)
    status = json.loads((acquired / "efficient.json").read_text())
    status.update(reason="download failed | HTTP 503\nretry later", fix="use a mirror")
    (acquired / "efficient.json").write_text(json.dumps(status))
    write_tables(PROFILING, acquired, ALL_MODELS, tmp_path / "out")
    rows = parse_table(section((tmp_path / "out" / "report.md").read_text(), "Not profiled"))
    assert rows == [{"model": "efficient", "reason": "download failed | HTTP 503 retry later", "fix": "use a mirror"}]
