"""`serveprof compare` on synthetic runs written with the measurement's own writers."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from serveprof import settings
from serveprof.cli import main as serveprof
from serveprof.commands.compare import EXIT_OK, EXIT_REGRESSION
from serveprof.compare.changes import (
    IMPROVEMENT,
    NOISE,
    REGRESSION,
    TOO_FEW,
    Settings,
    compare_latencies,
    quantiles,
)  # fmt: skip
from serveprof.compare.comparison import compare_trees
from serveprof.compare.forest import build_forest_figure
from serveprof.compare.trees import read_tree
from serveprof.errors import ServeprofError
from serveprof.measure.stats import latency_stats
from tests.compare_helpers import latencies, write_load_point, write_run
from tests.report_helpers import PROFILING

MODELS = {"inception": 34.0, "nasnet": 45.0}
BATCHES = (1, 4)
FAST = Settings(resamples=1000)


def draw(seed: int, shift: dict | None = None, count: int = 1000, spread: float = 0.08) -> dict:
    """{model: {batch: latencies}}, one series scaled by ``shift[(model, batch)]``."""
    rng = np.random.default_rng(seed)
    return {model: {batch: latencies(rng, typical * batch**0.9 * (shift or {}).get((model, batch), 1.0), count, spread)
                    for batch in BATCHES} for model, typical in MODELS.items()}  # fmt: skip


def verdicts(comparison) -> dict[str, str]:
    return dict(zip(comparison.rows["series"], comparison.rows["verdict"], strict=True))


def test_a_known_slowdown_is_the_only_regression_and_fails_the_exit_code(tmp_path, capsys):
    write_run(tmp_path / "base", draw(1))
    write_run(tmp_path / "new", draw(2, {("nasnet", 4): 1.10}))
    code = serveprof(
        [
            "compare",
            str(tmp_path / "base"),
            str(tmp_path / "new"),
            "--out",
            str(tmp_path / "out"),
            "--resamples",
            "1000",
        ]
    )
    assert code == EXIT_REGRESSION == 3
    rows = {row["series"]: row for row in _csv(tmp_path / "out" / "compare.csv")}
    assert {series for series, row in rows.items() if row["verdict"] == REGRESSION} == {"nasnet b4"}
    slow = rows["nasnet b4"]
    low, high = float(slow["p50_change_low_pct"]), float(slow["p50_change_high_pct"])
    assert 5 < low < 10 < high < 15  # the true +10 % lies inside an interval that excludes 0 and 5 %
    assert all(row["verdict"] == NOISE for series, row in rows.items() if series != "nasnet b4")
    out = capsys.readouterr().out
    assert "1 regression" in out and "regression: nasnet b4: p50 +" in out


def test_a_known_speed_up_is_an_improvement_and_passes(tmp_path):
    write_run(tmp_path / "base", draw(1))
    write_run(tmp_path / "new", draw(2, {("inception", 1): 0.85}))
    assert (
        serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--out", str(tmp_path / "out")]) == EXIT_OK
    )
    found = verdicts(compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST))
    assert found["inception b1"] == IMPROVEMENT
    assert [verdict for series, verdict in found.items() if series != "inception b1"] == [NOISE] * 3


def test_no_shift_gives_no_verdict_over_seeded_repetitions_and_a_real_shift_is_found():
    """Noisy, short series (100 requests, 30 % spread) are where a naive test would cry wolf.

    Over 40 seeded pairs from one distribution, the 95 % interval of the median change
    excludes zero about as often as it should (nominal 5 %), and the threshold turns
    none of those into a verdict; a true +20 % shift at the same noise is found in most.
    """
    settings = Settings(resamples=1000)
    excluded, false_verdicts, found = 0, 0, 0
    repetitions = 40
    for seed in range(repetitions):
        rng = np.random.default_rng(1000 + seed)
        base, same, slower = (latencies(rng, 40.0, 100, spread=0.3) for _ in range(3))
        row = compare_latencies(base, same, settings, label=f"same {seed}")
        excluded += row["p50_change_low_pct"] > 0 or row["p50_change_high_pct"] < 0
        false_verdicts += row["p50_verdict"] in (REGRESSION, IMPROVEMENT)
        found += compare_latencies(base, slower * 1.2, settings, label=f"shift {seed}")["p50_verdict"] == REGRESSION
        assert row["p99_verdict"] == TOO_FEW  # 100 requests are too few for a p99 verdict
    assert excluded / repetitions <= 0.125
    assert false_verdicts == 0
    assert found / repetitions >= 0.85


def test_point_estimates_are_the_stats_percentiles_and_intervals_are_reproducible():
    rng = np.random.default_rng(3)
    base, new = latencies(rng, 20.0, 700), latencies(rng, 21.0, 701)
    first = compare_latencies(base, new, FAST, "m b1")
    again = compare_latencies(base, new, FAST, "m b1")
    assert first == again
    for metric in ("p50", "p99"):
        assert first[f"{metric}_base_ms"] == latency_stats(base, 1)[f"{metric}_ms"]
        assert first[f"{metric}_new_ms"] == latency_stats(new, 1)[f"{metric}_ms"]
    assert first["p50_diff_low_ms"] <= first["p50_diff_ms"] <= first["p50_diff_high_ms"]
    assert first["throughput_change_pct"] == pytest.approx(100 * (np.mean(base) / np.mean(new) - 1))
    assert list(quantiles(np.array([3.0, 1.0, 2.0]))) == [2.0, 3.0]  # nearest rank: observed values


def test_few_requests_give_no_verdict_and_the_threshold_is_respected():
    rng = np.random.default_rng(4)
    few = compare_latencies(latencies(rng, 30, 10), latencies(rng, 60, 10), FAST, "few")
    assert few["p50_verdict"] == few["p99_verdict"] == TOO_FEW
    base, new = latencies(rng, 30, 2000, spread=0.02), latencies(rng, 30 * 1.03, 2000, spread=0.02)
    small = compare_latencies(base, new, FAST, "small")
    assert small["p50_change_low_pct"] > 0  # a real +3 %, resolved by the interval ...
    assert small["p50_verdict"] == NOISE  # ... but under the 5 % threshold
    assert compare_latencies(base, new, Settings(threshold_pct=1, resamples=1000), "small")["p50_verdict"] == REGRESSION


def test_provenance_differences_and_disturbed_series_are_listed(tmp_path):
    write_run(tmp_path / "base", draw(1))
    reasons = ["other processes used 97 % of a core (limit 25 %): python3 (pid 4242) 96 %"]
    write_run(
        tmp_path / "new", draw(2),
        provenance={"nasnet": {"tensorflow_version": "2.22.0", "git_revision": "99aa", "keep_awake": "on (CPUs 0,1)"},
                    "inception": {"git_revision": "99aa", "client_transport": "library"}},
        disturbance={("inception", 4): {"flagged": True, "reasons": reasons}, ("nasnet", 1): {"flagged": False, "reasons": []}},
    )  # fmt: skip
    comparison = compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST)
    found = {(row["key"], row["base"], row["new"]): row["models"] for row in comparison.differences}
    assert found == {
        ("tensorflow_version", "2.21.0", "2.22.0"): ["nasnet"],
        ("keep_awake", "none", "on (CPUs 0,1)"): ["nasnet"],
        ("git_revision", "05c4221d3b8e", "99aa"): ["inception", "nasnet"],
        ("client_transport", "builtin", "library"): ["inception"],
    }
    # the likeliest explanations first
    assert [row["key"] for row in comparison.differences] == [
        "tensorflow_version",
        "keep_awake",
        "git_revision",
        "client_transport",
    ]
    assert comparison.disturbed == {"base": {}, "new": {"inception b4": reasons}}
    flagged = comparison.rows.set_index("series")
    assert flagged.at["inception b4", "disturbed_new"] and not flagged.at["nasnet b1", "disturbed_new"]

    serveprof(
        ["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--resamples", "200"]
    )
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| tensorflow_version | 2.21.0 | 2.22.0 | nasnet |" in markdown
    assert "| new | inception b4 | other processes used 97 %" in markdown
    assert re.search(r"\| inception b4 \|.*\| disturbed in new \|", markdown)
    recorded = json.loads((tmp_path / "out" / "differences.json").read_text())
    assert recorded["disturbed"]["new"] == {"inception b4": reasons}


def test_identical_runs_differ_in_nothing(tmp_path):
    """The report tests' fixture run against itself, given as a bare workload/profiling folder."""
    comparison = compare_trees(read_tree(PROFILING), read_tree(PROFILING), FAST)
    assert set(comparison.rows["verdict"]) <= {NOISE, TOO_FEW}
    assert (comparison.rows["p50_change_pct"] == 0).all()
    assert comparison.differences == []
    # nasnet b8 has 6 requests: too few for any verdict
    assert verdicts(comparison)["nasnet b8"] == TOO_FEW


def test_series_in_one_run_only_are_listed_and_nothing_in_common_is_an_error(tmp_path):
    write_run(tmp_path / "base", draw(1))
    extra = draw(2)
    extra["efficient"] = {1: extra["nasnet"][1]}
    del extra["nasnet"][4]
    write_run(tmp_path / "new", extra)
    comparison = compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST)
    assert comparison.only_base == ["nasnet b4"] and comparison.only_new == ["efficient b1"]
    write_run(tmp_path / "other", {"efficient": {1: extra["efficient"][1]}})
    with pytest.raises(ServeprofError, match="no series in common"):
        compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "other"), FAST)


def test_exit_codes_for_errors_and_bad_arguments(tmp_path, capsys):
    write_run(tmp_path / "base", draw(1))
    assert serveprof(["compare", str(tmp_path / "base"), "no-such-run", "--runs-dir", str(tmp_path / "runs")]) == 1
    error = capsys.readouterr().err
    assert "'no-such-run' is neither a folder nor a run kept under" in error and "serveprof snapshot NAME" in error
    (tmp_path / "empty").mkdir()
    assert serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "empty")]) == 1
    assert "holds no results" in capsys.readouterr().err
    assert serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "base"), "--threshold-pct", "-1"]) == 1
    with pytest.raises(SystemExit) as stopped:
        serveprof(["compare", str(tmp_path / "base")])
    assert stopped.value.code == 2


def test_forest_plot_and_html_show_each_change_with_its_interval(tmp_path):
    write_run(tmp_path / "base", draw(1))
    write_run(
        tmp_path / "new",
        draw(2, {("nasnet", 4): 1.10}),
        disturbance={("inception", 1): {"flagged": True, "reasons": ["busy"]}},
    )
    comparison = compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST)
    fig = build_forest_figure(comparison, settings.style({}))
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines()}
    row = comparison.rows.set_index("series").loc["nasnet b4"]
    assert lines["p50:nasnet b4"].get_xdata()[0] == pytest.approx(row["p50_change_pct"])
    assert list(lines["ci:p99:nasnet b4"].get_xdata()) == pytest.approx(
        [row["p99_change_low_pct"], row["p99_change_high_pct"]]
    )
    assert lines["p50:nasnet b4"].get_color() != lines["p50:nasnet b1"].get_color()  # the regression stands out
    assert "inception b1 (disturbed)" in [label.get_text() for label in fig.axes[0].get_yticklabels()]

    serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--out", str(tmp_path / "out"), "--resamples", "200",
               "--style", '{"formats": ["png", "svg"]}'])  # fmt: skip
    page = (tmp_path / "out" / "compare.html").read_text()
    assert '<img src="data:image/png;base64,' in page
    assert '<td class="regression"><strong>regression</strong></td>' in page
    assert (tmp_path / "out" / "forest.png").stat().st_size > 0 and (tmp_path / "out" / "forest.svg").is_file()
    assert "![forest plot of the latency changes](forest.png)" in (tmp_path / "out" / "compare.md").read_text()


def test_a_further_layout_is_one_more_walker(tmp_path):
    """Per-device results (workload/devices/<device>/profiling/...) are series keyed by device too."""
    for run, seed in (("base", 1), ("new", 2)):
        write_run(tmp_path / run, draw(seed))
        shift = {("nasnet", 1): 1.2} if run == "new" else {}
        write_run(tmp_path / run, draw(seed + 10, shift), under="workload/devices/edge/profiling")
    comparison = compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST)
    found = verdicts(comparison)
    assert len(found) == 8
    assert found["device=edge nasnet b1"] == REGRESSION and found["nasnet b1"] == NOISE
    assert comparison.dimensions == ["device", "model", "batch"]


def write_load_tree(root, seed: int, shift: dict | None = None) -> dict:
    """Three load points of one model, five 1 s windows each: two slow warm-up windows the statistics leave out,
    then three whose OK latencies are scaled by ``shift[(scenario, point)]``. Returns {key: expected latencies}."""
    rng = np.random.default_rng(seed)
    expected = {}
    for scenario, point, typical in (
        ("closed", "c1", 0.5),
        ("closed", "c4", 1.2),
        ("closed-mbs8-t2000-th1", "c4", 1.6),
    ):
        scale = (shift or {}).get((scenario, point), 1.0)
        windows = [latencies(rng, typical * 50, 40) for _ in range(2)]
        windows += [latencies(rng, typical * scale, 400) for _ in range(3)]
        write_load_point(root, "tiny", scenario, point, windows, errors=2)
        expected[(("model", "tiny"), ("scenario", scenario), ("point", point))] = np.concatenate(windows[2:])
    return expected


def test_load_points_are_series_of_their_summary_windows_and_a_shift_is_flagged(tmp_path, capsys):
    """LoadWalker reads workload/load/<model>/<scenario>/<point>: the OK latencies of the windows the statistics
    come from, keyed by (model, scenario, point); `serveprof compare` flags the one point that slowed down."""
    expected = write_load_tree(tmp_path / "base", 1)
    write_load_tree(tmp_path / "new", 2, {("closed", "c4"): 1.25})
    tree = read_tree(tmp_path / "base")
    assert set(tree.series) == set(expected)
    for key, series in tree.series.items():
        np.testing.assert_allclose(np.sort(series.latencies()), np.sort(expected[key]), atol=1e-4)
        document = json.loads(
            (tmp_path / "base" / "workload" / "load" / "tiny" / key[1][1] / f"{key[2][1]}.json").read_text()
        )
        assert series.count == document["stats"]["count"] == 1200
        assert series.throughput_per_s == pytest.approx(400.0)  # 1,200 OK answers in three 1 s windows
        assert series.batch_size == 1 and series.peak_memory_mb == 420.0
        assert series.provenance["backend"] == "embedded" and series.provenance["client_transport"] == "builtin"
    assert tree.series[next(iter(expected))].label == "scenario=closed point=c1 tiny"

    code = serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--out", str(tmp_path / "out"),
                      "--resamples", "1000"])  # fmt: skip
    assert code == EXIT_REGRESSION, capsys.readouterr()
    rows = {(row["scenario"], row["point"]): row["verdict"] for row in _csv(tmp_path / "out" / "compare.csv")}
    assert rows == {("closed", "c1"): NOISE, ("closed", "c4"): REGRESSION, ("closed-mbs8-t2000-th1", "c4"): NOISE}


def _csv(path):
    import csv

    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_forest_plot_of_many_series_keeps_every_verdict():
    import pandas as pd

    from serveprof.compare.forest import shown_rows

    rows = pd.DataFrame({
        "series": [f"m{i} b1" for i in range(300)],
        "verdict": [REGRESSION if i in (7, 250) else NOISE for i in range(300)],
        "p50_change_pct": [float(i % 50) / 10 for i in range(300)],
        "disturbed_base": [i == 3 for i in range(300)],
        "disturbed_new": False,
    })  # fmt: skip
    shown = shown_rows(rows, limit=20)
    assert len(shown) == 20 and {"m7 b1", "m250 b1", "m3 b1"} <= set(shown["series"])
    assert list(shown.index) == sorted(shown.index)  # in the table's order
    assert shown_rows(rows.head(10), limit=20).equals(rows.head(10))


def test_variants_are_series_keyed_by_variant_with_their_export_facts(tmp_path):
    """workload/variants/<variant>/profiling/... beside fp32's workload/profiling, with each variant's export status."""
    from serveprof.measure.result_files import write_json
    from serveprof.variants.export import status

    for run, seed in (("base", 1), ("new", 2)):
        write_run(tmp_path / run, draw(seed))
        shift = {("inception", 4): 1.2} if run == "new" else {}
        write_run(tmp_path / run, draw(seed + 10, shift), under="workload/variants/fp16/profiling")
        for model in MODELS:
            size = 41_000 if run == "new" and model == "nasnet" else 40_000
            write_json(
                tmp_path / run / "data/model/variants" / model / "fp16.json",
                status(model, "fp16", "ok", size_bytes=size, server_flags=[]),
            )
    comparison = compare_trees(read_tree(tmp_path / "base"), read_tree(tmp_path / "new"), FAST)
    found = verdicts(comparison)
    assert len(found) == 8
    assert found["variant=fp16 inception b4"] == REGRESSION and found["inception b4"] == NOISE
    assert {series for series, verdict in found.items() if verdict == REGRESSION} == {"variant=fp16 inception b4"}
    assert comparison.dimensions == ["variant", "model", "batch"]
    assert comparison.differences == [
        {"key": "variant_size_bytes", "base": "40000", "new": "41000", "models": ["variant=fp16 nasnet"]}
    ]


def servers(rng: np.random.Generator, typical_ms: float, repeats: int, count: int, server_cv: float = 0.10):
    """``repeats`` series of ``count`` requests, each on a "fresh server" whose level moves by ``server_cv``:
    the spread measured between fresh servers here (docs/measurement.md, "Repeatability")."""
    return [latencies(rng, typical_ms * rng.lognormal(0.0, server_cv), count) for _ in range(repeats)]


def test_repeats_carry_the_spread_between_servers_into_the_interval():
    """With the servers' own spread, requests-only intervals cry wolf; the two-level ones do not, and still
    find a real +30 %."""
    pooled_verdicts = two_level_verdicts = found = 0
    repetitions = 20
    for seed in range(repetitions):
        rng = np.random.default_rng(2000 + seed)
        base, same, slower = (servers(rng, 0.4, 5, 300) for _ in range(3))
        pooled = compare_latencies(np.concatenate(base), np.concatenate(same), FAST, f"pooled {seed}")
        two_level = compare_latencies(base, same, FAST, f"two-level {seed}")
        assert pooled["interval"] == "requests" and two_level["interval"] == "repeats and requests"
        assert (two_level["base_repeats"], two_level["new_repeats"]) == (5, 5)
        assert two_level["p50_change_pct"] == pooled["p50_change_pct"]  # the same point estimate, a wider interval
        assert two_level["p50_change_high_pct"] - two_level["p50_change_low_pct"] > (
            pooled["p50_change_high_pct"] - pooled["p50_change_low_pct"]
        )
        pooled_verdicts += pooled["p50_verdict"] in (REGRESSION, IMPROVEMENT)
        two_level_verdicts += two_level["p50_verdict"] in (REGRESSION, IMPROVEMENT)
        slow = [part * 1.3 for part in slower]
        found += compare_latencies(base, slow, FAST, f"shift {seed}")["p50_verdict"] == REGRESSION
    assert pooled_verdicts >= repetitions // 4  # the naive interval: a false verdict in many of the pairs
    assert two_level_verdicts == 0
    assert found / repetitions >= 0.8


def test_a_folded_cell_is_compared_repeat_by_repeat(tmp_path):
    """A run measured with measure.repeats: the cell's file is split back into its repeats by the counts the fold
    wrote, and the report says what the intervals cover."""
    rng = np.random.default_rng(7)
    base = {"tiny": {1: servers(rng, 0.4, 3, 400), 8: latencies(rng, 2.0, 400)}}
    new = {"tiny": {1: servers(rng, 0.4, 3, 400), 8: latencies(rng, 2.0, 400)}}
    write_run(tmp_path / "base", base)
    write_run(tmp_path / "new", new)
    base_tree = read_tree(tmp_path / "base")
    parts = base_tree.series[(("model", "tiny"), ("batch", "1"))].parts()
    assert [list(part) for part in parts] == [list(part) for part in base["tiny"][1]]
    comparison = compare_trees(base_tree, read_tree(tmp_path / "new"), FAST)
    rows = comparison.rows.set_index("series")
    assert rows.loc["tiny b1", "interval"] == "repeats and requests"
    assert rows.loc["tiny b8", "interval"] == "requests"
    assert serveprof(["compare", str(tmp_path / "base"), str(tmp_path / "new"), "--out", str(tmp_path / "out")]) in (
        0,
        3,
    )
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "1 of 2 series were measured on one server" in text and "repeats 3 / 3" in text

    stats = tmp_path / "new" / "workload" / "profiling" / "tiny" / "stats" / "b1.json"
    document = json.loads(stats.read_text())
    document["repeats"]["series"][0]["count"] += 1  # the stats no longer describe the file
    stats.write_text(json.dumps(document))
    with pytest.raises(ServeprofError, match="rerun the fold_repeats step"):
        read_tree(tmp_path / "new").series[(("model", "tiny"), ("batch", "1"))].parts()
