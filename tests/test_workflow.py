"""The real workflow, end to end and incremental, on the tiny test config.

Snakemake runs as a subprocess in a scratch directory. tiny_zoo's tarball is a
zoo-shaped release built by the test and downloaded over HTTP from loopback, so the
download and the batch wrapping run for real; tiny_keras is a Keras application
exported with random weights; tiny_offline points at a closed port and must end up
"not profiled" without sinking the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.http_server import FileServer
from tests.workflow_runner import read_config, run_workflow, tiny_test_config, write_config

pytestmark = pytest.mark.slow

OFFLINE_MODEL = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_offline.tar.gz"}
PROFILED = ("tiny_keras", "tiny_zoo")
SERVING_RULES = {"acquire_model", "export_model", "cold_start", "measure_batch"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("served")
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "zoo-tarball", str(directory / "tiny_zoo.tar.gz"), "--name", "tiny_zoo"],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    with FileServer(directory) as server:
        yield server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, served):
    work = tmp_path_factory.mktemp("workflow")
    write_config(work, tiny_test_config(served.url_for("tiny_zoo.tar.gz"), tiny_offline=OFFLINE_MODEL))
    first = run_workflow(work)
    assert first.returncode == 0, first.output[-6000:]
    return work


def test_first_run_writes_the_result_contract(workdir):
    for model in PROFILED:
        folder = workdir / "workload" / "profiling" / model
        durations = (folder / f"{model}.csv").read_text().splitlines()
        assert durations[0] == "batch_size, duration"
        rows = [line.split(", ") for line in durations[1:]]
        assert [int(batch) for batch, _ in rows] == [1, 2]
        summary = pd.read_csv(folder / "summary.csv")
        for batch, duration in rows:
            latencies = [float(line) for line in (folder / f"{model}-b{batch}.csv").read_text().splitlines()]
            assert len(latencies) >= 2 and all(value > 0 for value in latencies)
            row = summary[summary.batch_size == int(batch)].iloc[0]
            assert row["count"] == len(latencies)
            assert float(duration) == pytest.approx(sum(latencies) / len(latencies), rel=1e-3)
        coldstart = pd.read_csv(folder / "coldstart.csv")
        assert coldstart.loc[0, "load_ms"] > 0 and coldstart.loc[0, "first_infer_ms"] > 0
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["backend"] == "embedded" and provenance["config_hash"]


def test_zoo_model_was_downloaded_and_batch_wrapped(workdir, served):
    assert (workdir / "data" / "model" / "download" / "tiny_zoo.tar.gz").is_file()
    assert served.request_count("tiny_zoo.tar.gz") >= 1
    stats = json.loads((workdir / "workload" / "profiling" / "tiny_zoo" / "stats" / "b2.json").read_text())
    assert stats["batch_size"] == 2 and stats["stats"]["count"] >= 2


def test_unobtainable_model_is_listed_not_profiled(workdir):
    manifest = json.loads((workdir / "workload" / "profiling" / "all").read_text())
    assert sorted(manifest["profiled"]) == sorted(PROFILED)
    assert "tiny_offline" in manifest["not_profiled"]
    assert manifest["not_profiled"]["tiny_offline"]["fix"]
    assert not (workdir / "workload" / "profiling" / "tiny_offline").exists()
    report = (workdir / "reports" / "report.md").read_text()
    assert "tiny_offline" in report.split("Not profiled", 1)[1]


def test_report_and_figures_exist(workdir):
    for figure in ("latency", "throughput", "coldstart", "resources"):
        for ext in ("png", "svg"):
            assert (workdir / "reports" / "figures" / f"{figure}.{ext}").stat().st_size > 0
    for model in PROFILED:
        assert (workdir / "reports" / "figures" / model / "distribution.png").is_file()


def test_html_report_has_a_category_per_model(workdir):
    run = run_workflow(workdir, "--report", "reports/report.html")
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs == []  # a report reads results, it never runs a job
    html = (workdir / "reports" / "report.html").read_text(encoding="utf-8", errors="replace")
    for category in ("Overview", *PROFILED):
        assert category in html
    assert "Latency against batch size" in html  # the overview caption, rendered per figure


def test_second_run_does_nothing(workdir):
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs == [], run.jobs
    assert "Nothing to be done" in run.output


def test_deleting_one_latency_file_recomputes_exactly_that(workdir):
    (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").unlink()
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs_of("measure_batch") == [{"model": "tiny_keras", "batch": "2"}]
    assert run.jobs_of("aggregate_model") == [{"model": "tiny_keras"}]
    assert not run.rules() & {"acquire_model", "export_model", "cold_start"}
    assert all(job.get("model", "tiny_keras") == "tiny_keras" for _, job in run.jobs)
    assert (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").is_file()


def test_changing_a_plot_setting_reruns_only_the_plots(workdir):
    config = read_config(workdir)
    config["plots"]["dpi"] = 72
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.rules() - {"all"} == {"plot_overview", "plot_model"}, run.jobs


def test_changing_requests_reruns_measurements_not_downloads_or_exports(workdir):
    config = read_config(workdir)
    config["measure"]["requests"] = 15
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    measured = sorted((job["model"], job["batch"]) for job in run.jobs_of("measure_batch"))
    assert measured == [(model, batch) for model in PROFILED for batch in ("1", "2")]
    assert not run.rules() & {"acquire_model", "export_model", "cold_start"}


def test_adding_a_model_adds_only_its_jobs(workdir, tmp_path):
    source = tmp_path / "my_saved_model"
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "classifier", str(source)],
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    config = read_config(workdir)
    config["models"]["tiny_saved"] = {"source": "saved_model", "type": "classification", "path": str(source)}
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    for rule in SERVING_RULES | {"aggregate_model"}:
        assert {job["model"] for job in run.jobs_of(rule)} == {"tiny_saved"}, (rule, run.jobs)
    assert (workdir / "workload" / "profiling" / "tiny_saved" / "tiny_saved.csv").is_file()


def test_staging_a_tarball_later_profiles_the_model(workdir, served):
    staged = workdir / "data" / "model" / "download" / "tiny_offline.tar.gz"
    shutil.copy(workdir / "data" / "model" / "download" / "tiny_zoo.tar.gz", staged)
    # The tarball's top folder is tiny_zoo/, as a renamed zoo release would be.
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs_of("acquire_model") == [{"model": "tiny_offline"}]
    manifest = json.loads((workdir / "workload" / "profiling" / "all").read_text())
    assert "tiny_offline" in manifest["profiled"] and not manifest["not_profiled"]


def test_strict_mode_fails_on_an_unobtainable_model(tmp_path):
    config = tiny_test_config("http://127.0.0.1:9/tiny_zoo.tar.gz")
    config["models"] = {"tiny_offline": OFFLINE_MODEL}
    config["strict"] = True
    write_config(tmp_path, config)
    run = run_workflow(tmp_path)
    assert run.returncode != 0
    assert "tiny_offline" in run.output
    assert not (tmp_path / "data" / "model" / "acquired" / "tiny_offline.json").exists()
