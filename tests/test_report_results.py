"""Reading result files: the contract's formats parse, and damaged files are named with a fix."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from serveprof.errors import ServeprofError
from serveprof.report.results import load_latencies, load_run, load_summary, parse_flag, parse_percentile_list
from tests.report_helpers import ACQUIRED, ALL_MODELS, PROFILED, PROFILING, UNAVAILABLE


@pytest.mark.parametrize("cell", ["p90;p99", '["p90", "p99"]', "['p90', 'p99']", "p90 p99", "p90,p99"])
def test_percentile_lists_in_any_written_form(cell):
    assert parse_percentile_list(cell) == ("p90", "p99")


@pytest.mark.parametrize(
    ("cell", "flag"),
    [("true", True), ("True", True), (True, True), ("1", True), ("false", False), (float("nan"), False), ("", False)],
)
def test_flags(cell, flag):
    assert parse_flag(cell) is flag


def test_run_lists_unavailable_models_without_reading_their_results():
    run = load_run(PROFILING, ACQUIRED, ALL_MODELS)
    assert run.profiled == PROFILED and run.not_profiled == UNAVAILABLE
    assert list(run.summary["model"].unique()) == PROFILED  # the order asked for
    nasnet = run.summary[run.summary["model"] == "nasnet"].set_index("batch_size")
    assert nasnet.at[8, "low_sample_percentiles"] == ("p90", "p95", "p99") and nasnet.at[8, "truncated"]
    assert nasnet.at[1, "low_sample_percentiles"] == () and not nasnet.at[1, "truncated"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda folder: (folder / "summary.csv").write_text("model,batch_size\nnasnet,1\n"), "lacks the column"),
        (
            lambda folder: (folder / "summary.csv").write_text(
                (folder / "summary.csv").read_text().replace("nasnet,1,", "inception,1,")
            ),
            "not only for 'nasnet'",
        ),
        (
            lambda folder: (folder / "summary.csv").write_text(
                (folder / "summary.csv").read_text().replace(",false,", ",maybe,", 1)
            ),
            "truncated",
        ),
        (
            lambda folder: (folder / "summary.csv").write_text(
                (folder / "summary.csv").read_text().replace(",700,", ",lots,", 1)
            ),
            "non-numbers",
        ),
    ],
)
def test_damaged_summaries_are_refused_with_the_file_named(tmp_path, damage, message):
    shutil.copytree(PROFILING / "nasnet", tmp_path / "nasnet")
    damage(tmp_path / "nasnet")
    with pytest.raises(ServeprofError, match=message) as error:
        load_summary(tmp_path, ["nasnet"])
    assert "nasnet" in str(error.value) and error.value.fix


def test_latency_files_read_back_exactly_and_empty_ones_are_refused(tmp_path):
    latencies = load_latencies(PROFILING, "nasnet", [1, 8])
    assert latencies[8].size == 6
    np.testing.assert_array_equal(
        latencies[1], [float(line) for line in (PROFILING / "nasnet" / "nasnet-b1.csv").read_text().split()]
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "m-b1.csv").write_text("")
    with pytest.raises(ServeprofError, match="m-b1.csv holds no latencies"):
        load_latencies(tmp_path, "m", [1])
