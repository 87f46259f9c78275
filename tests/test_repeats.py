"""Folding a cell's repeats (measure.repeats) and the result layout of devices and repeats."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
from scipy import stats as scipy_stats

from serveprof import layout
from serveprof.errors import ServeprofError
from serveprof.measure.device_result import device_provenance
from serveprof.measure.repeats import fold
from serveprof.measure.stats import latency_stats


def repeat(number: int, latencies: list[float], batch: int = 4, **extra) -> tuple[dict, list[float]]:
    document = {
        "model": "m",
        "batch_size": batch,
        "repeat": number,
        "stats": latency_stats(latencies, batch),
        "resources": {"cpu_util_pct": 50.0 + number, "rss_peak_mb": 100.0 * number, "rss_mean_mb": 90.0},
        "first_init_ms": 10.0 * number,
        "truncated": False,
        "started_at": f"2026-01-0{number}T00:00:00+00:00",
        "finished_at": f"2026-01-0{number}T00:01:00+00:00",
        **extra,
    }
    return document, latencies


def test_a_fold_pools_the_latencies_and_gives_each_repeats_mean_their_cv_and_interval():
    runs = [repeat(2, [12.0, 14.0, 13.0]), repeat(1, [10.0, 10.0, 10.0]), repeat(3, [11.0, 11.0])]
    documents, latencies = zip(*runs, strict=True)
    pooled, folded = fold(documents, latencies, max_cv_pct=3.0)
    # repeat order, whatever order they came in
    assert pooled == [10.0, 10.0, 10.0, 12.0, 14.0, 13.0, 11.0, 11.0]
    assert folded["stats"] == latency_stats(pooled, 4)
    block = folded["repeats"]
    assert [one["repeat"] for one in block["series"]] == [1, 2, 3]
    means = [10.0, 13.0, 11.0]
    assert block["mean_ms"] == pytest.approx(statistics.fmean(means))
    assert block["cv_pct"] == pytest.approx(100 * statistics.stdev(means) / statistics.fmean(means))
    low, high = scipy_stats.t.interval(0.95, 2, loc=statistics.fmean(means), scale=statistics.stdev(means) / 3**0.5)
    assert (block["ci_low_ms"], block["ci_high_ms"]) == (pytest.approx(low), pytest.approx(high))
    assert block["flagged"] is True  # a CV of about 13 % is above 3 %
    assert folded["resources"]["rss_peak_mb"] == 300.0
    assert folded["first_init_ms"] == pytest.approx(20.0)
    assert (folded["started_at"], folded["finished_at"]) == ("2026-01-01T00:00:00+00:00", "2026-01-03T00:01:00+00:00")
    assert "repeat" not in folded


def test_repeats_that_agree_are_not_flagged():
    runs = [repeat(1, [10.0, 10.2]), repeat(2, [10.1, 10.1])]
    _, folded = fold(*zip(*runs, strict=True), max_cv_pct=3.0)
    assert folded["repeats"]["cv_pct"] < 3.0 and folded["repeats"]["flagged"] is False
    provenance = device_provenance([folded])
    assert provenance["repeats"] == 2
    [cell] = provenance["repeat_cells"]
    assert cell["means_ms"] == [pytest.approx(10.1), pytest.approx(10.1)] and cell["flagged"] is False


def test_a_cell_with_a_repeat_killed_by_the_memory_cap_does_not_fit():
    killed = {"memory": "1GiB", "memory_bytes": 1 << 30, "peak_mb": 1023.0, "during": "serving"}
    fine, fine_latencies = repeat(1, [5.0, 6.0])
    unfit, _ = repeat(2, [1.0])
    unfit.update(stats={"count": 0}, does_not_fit=killed)
    pooled, folded = fold([fine, unfit], [fine_latencies, []], max_cv_pct=3.0)
    assert pooled == []
    assert folded["stats"]["count"] == 0
    assert folded["does_not_fit"] == {**killed, "repeats_killed": 1, "repeats": 2}
    assert folded["repeats"]["flagged"] is False and folded["repeats"]["cv_pct"] is None


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda docs, lats: (docs, lats[:1]), "2 stats files but 1 latency files"),
        (lambda docs, lats: ([docs[0], {**docs[1], "batch_size": 8}], lats), "different cells"),
        (lambda docs, lats: ([docs[0], {**docs[1], "repeat": 1}], lats), "not distinct"),
        (lambda docs, lats: (docs, [lats[0], lats[1][:1]]), "counted 2 latencies but its file holds 1"),
        (lambda docs, lats: ([], []), "no repeats to fold"),
    ],
)
def test_repeats_that_do_not_belong_together_are_refused(change, said):
    documents, latencies = zip(repeat(1, [1.0, 2.0]), repeat(2, [1.5, 2.5]), strict=True)
    with pytest.raises(ServeprofError, match=said):
        fold(*change(list(documents), list(latencies)), max_cv_pct=3.0)


def test_the_layout_keeps_the_reference_folder_for_the_host_and_one_series():
    assert layout.results_dir() == "workload/profiling"
    assert layout.model_dir("m", "edge") == "workload/devices/edge/profiling/m"
    assert layout.device_of(layout.device_segment("edge")) == "edge"
    assert layout.device_of("") == layout.HOST
    assert layout.repeat_of(layout.repeat_segment(3)) == 3 and layout.repeat_segment(None) == ""
    with pytest.raises(ValueError, match="not a device segment"):
        layout.device_of("devices/../x/")


def test_a_model_that_fits_nowhere_on_its_device_is_reported_and_drawn_not_refused(tmp_path):
    """Every batch size killed by the memory cap: the summary has no rows, and the report and figure say why."""
    from serveprof.cli import main as serveprof
    from serveprof.measure.result_files import SUMMARY_COLUMNS
    from tests.report_helpers import ACQUIRED, PROFILED, PROFILING

    results, acquired = tmp_path / "profiling", tmp_path / "acquired"
    shutil.copytree(PROFILING, results)
    shutil.copytree(ACQUIRED, acquired)
    folder = results / "big"
    folder.mkdir()
    (folder / "summary.csv").write_text(",".join(SUMMARY_COLUMNS) + "\n")
    (folder / "big.csv").write_text("batch_size, duration\n")
    (folder / "coldstart.csv").write_text("model,load_ms,first_infer_ms,backend,backend_version\nbig,,,embedded,\n")
    (folder / "big-b1.csv").write_text("")
    unfit = {
        "batch_size": 1,
        "memory": "100MiB",
        "memory_bytes": 100 << 20,
        "peak_mb": 100.0,
        "during": "loading the model",
    }
    limits = {"memory": "100MiB", "mechanism": "cgroup v1", "memory_enforced": True, "memory_peak_bytes": 100 << 20}
    provenance = json.loads((PROFILING / PROFILED[0] / "provenance.json").read_text())
    provenance.update(model="big", device="wee", limits=limits, does_not_fit=[unfit])
    (folder / "provenance.json").write_text(json.dumps(provenance))
    status = json.loads((acquired / f"{PROFILED[0]}.json").read_text())
    (acquired / "big.json").write_text(json.dumps({**status, "model": "big"}))
    models = [*PROFILED, "big"]
    out = tmp_path / "reports"
    assert serveprof(["tables", "--results", str(results), "--acquired-dir", str(acquired), "--models", *models,
                      "--out", str(out)]) == 0  # fmt: skip
    report = (out / "report.md").read_text()
    assert "| big | 1 | does not fit in 100MiB | 100 MiB | loading the model |" in report
    style = '{"formats": ["png"]}'
    assert serveprof(["plot", "--results", str(results), "--model", "big", "--style", style, "--out", str(out)]) == 0
    assert (out / "big" / "distribution.png").stat().st_size > 0
    # the overview keeps the model: its cold start has no times
    only = ["--only", "coldstart"]
    assert (
        serveprof(["plot", "--results", str(results), "--models", *models, *only, "--style", style, "--out", str(out)])
        == 0
    )


def test_a_repeat_that_stayed_disturbed_marks_the_folded_cell():
    """Device jobs fold their repeats: a disturbed repeat 2 must not vanish behind a quiet repeat 1."""
    from serveprof.measure.retry import disturbance_columns

    quiet = {"flagged": False, "reasons": [], "foreign_cpu_pct": 3.0, "steal_pct": 0.1, "attempts": 1}
    busy = {"flagged": True, "reasons": ["other processes used 97 % of a core (limit 25 %)"],
            "foreign_cpu_pct": 97.0, "steal_pct": 0.4, "attempts": 2}  # fmt: skip
    runs = [repeat(1, [10.0, 10.2], disturbance=quiet), repeat(2, [10.1, 10.3], disturbance=busy)]
    _, folded = fold(*zip(*runs, strict=True), max_cv_pct=3.0)
    columns = disturbance_columns(folded["disturbance"])
    assert columns == {"disturbed": True, "foreign_cpu_pct": 97.0, "steal_pct": 0.4, "attempts": 3,
                       "disturbance_reasons": "repeat 2: other processes used 97 % of a core (limit 25 %)"}  # fmt: skip
    assert [one["disturbed"] for one in folded["repeats"]["series"]] == [False, True]
    [cell] = device_provenance([folded])["repeat_cells"]
    assert cell["disturbed_repeats"] == [2]
    from types import SimpleNamespace

    from serveprof.report.device_section import repeats_table

    _, _, [row] = repeats_table(SimpleNamespace(profiled=["m"], provenance={"m": {"repeat_cells": [cell]}}))
    assert row[-1] == "disturbed: repeat 2"  # the CV of 0.7 % is within 3 %, so this is the only flag
    _, calm = fold(*zip(repeat(1, [10.0], disturbance=quiet), repeat(2, [10.1], disturbance=quiet), strict=True), 3.0)
    assert calm["disturbance"]["flagged"] is False and calm["disturbance"]["reasons"] == []
    _, bare = fold(*zip(repeat(1, [10.0]), repeat(2, [10.1]), strict=True), 3.0)
    assert "disturbance" not in bare  # runs from before the sampler read as they did
