"""The real workflow, end to end and incremental, on the tiny test config.

Snakemake runs as a subprocess in a scratch directory, with no network but loopback
and an empty Keras cache (tests/workflow_runner.py). tiny_zoo's tarball is a
zoo-shaped release built by the test and downloaded over HTTP from loopback, so the
download and the batch wrapping run for real; tiny_keras asks for ImageNet weights,
which cannot be fetched, so it is exported and profiled with random weights;
tiny_offline points at a closed port and must end up "not profiled" without sinking
the run, until its status is deleted to ask for a new try.

The workflow uses Snakemake's public API only: the tests check what it reruns, that a
dry run lists what the real run then does, and that the documented commands work.

One complete run (``baseline``) is shared read-only. A test that changes something
works on a copy of it (``workdir``), so no test depends on another or on their order.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import tomllib
import yaml
from google.protobuf import text_format
from snakemake.cli import get_argument_parser

from serveprof.server.config_protos import message_class
from tests.fixtures.http_server import FileServer
from tests.fixtures.tarballs import add_file
from tests.workflow_runner import (
    BIN,
    REPO,
    Run,
    read_config,
    run_command,
    run_workflow,
    tiny_test_config,
    workflow_command,
    write_config,
)

pytestmark = pytest.mark.slow

OFFLINE_MODEL = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_offline.tar.gz"}
# ImageNet weights (the default) at a size they exist for; unreachable here.
FALLBACK_KERAS = {"source": "keras", "type": "classification", "application": "MobileNetV2", "input_size": [96, 96]}
PROFILED = ("tiny_keras", "tiny_zoo")
SERVING_RULES = {"acquire_model", "export_model", "cold_start", "measure_batch"}
FIGURES = ("latency", "throughput", "coldstart", "resources")
TABLES = ("coldstart", "durations", "compact", "percentiles", "server_latency", "resources", "not_profiled")
WARMUP_BATCH_SIZES = [1, 2]  # export.warmup_batch_sizes: records written at export, replayed at every start


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("served")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fixtures.tiny_models",
            "zoo-tarball",
            str(directory / "tiny_zoo.tar.gz"),
            "--name",
            "tiny_zoo",
        ],
        check=True,
        cwd=REPO,
    )
    with FileServer(directory) as server:
        yield server


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, served):
    """A complete first run. Read it, never change it: change a ``workdir`` instead."""
    work = tmp_path_factory.mktemp("workflow")
    config = tiny_test_config(served.url_for("tiny_zoo.tar.gz"), tiny_offline=OFFLINE_MODEL)
    config["models"]["tiny_keras"] = FALLBACK_KERAS
    config["export"] = {"warmup_batch_sizes": WARMUP_BATCH_SIZES}
    write_config(work, config)
    first = run_workflow(work)
    assert first.returncode == 0, first.output[-6000:]
    return work


@pytest.fixture
def workdir(baseline, tmp_path):
    """A copy of the complete run, metadata and file times included."""
    return Path(shutil.copytree(baseline, tmp_path / "workflow", symlinks=True))


def status_of(workdir: Path, model: str) -> dict:
    return json.loads((workdir / "data" / "model" / "acquired" / f"{model}.json").read_text())


def snapshot(workdir: Path, *folders: str) -> dict[str, tuple[int, bytes]]:
    """Modification time and content of every file under ``folders``."""
    files = {}
    for folder in folders:
        for path in sorted((workdir / folder).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(workdir))] = (path.stat().st_mtime_ns, path.read_bytes())
    return files


def dry_then_real(workdir: Path, target: str | None = "workload/profiling/all") -> Run:
    """A dry run, then the real run: the dry run listed exactly the jobs the real one ran."""
    dry = run_workflow(workdir, "-n", target=target)
    assert dry.returncode == 0, dry.output[-4000:]
    real = run_workflow(workdir, target=target)
    assert real.returncode == 0, real.output[-4000:]
    assert sorted(map(job_key, dry.jobs)) == sorted(map(job_key, real.jobs)), (dry.jobs, real.jobs)
    return real


def job_key(job: tuple[str, dict]) -> tuple:
    return job[0], tuple(sorted(job[1].items()))


# ------------------------------------------------------------------ the first run


def test_first_run_writes_the_result_contract(baseline):
    for model in PROFILED:
        folder = baseline / "workload" / "profiling" / model
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
            # The server's own latency of the same requests (server.monitoring is on by default).
            assert row["server_count"] == len(latencies) and 0 < row["server_mean_ms"] < row["mean_ms"]
            assert row["serialization"] == "typed_fields" and row["attempts"] == 1
        coldstart = pd.read_csv(folder / "coldstart.csv")
        assert coldstart.loc[0, "load_ms"] > 0 and coldstart.loc[0, "first_infer_ms"] > 0
        # The export wrote warm-up records (a zoo detector's at its configured image size); the server replayed them.
        assert coldstart.loc[0, "warmup_records"] == len(WARMUP_BATCH_SIZES) and coldstart.loc[0, "warmup_ms"] > 0
        assert coldstart.loc[0, "server_load_ms"] + coldstart.loc[0, "warmup_ms"] < coldstart.loc[0, "load_ms"]
        provenance = json.loads((folder / "provenance.json").read_text())
        assert provenance["backend"] == "embedded" and provenance["config_hash"]


def test_zoo_model_was_downloaded_and_batch_wrapped(baseline, served):
    assert (baseline / "data" / "model" / "download" / "tiny_zoo.tar.gz").is_file()
    assert served.request_count("tiny_zoo.tar.gz") >= 1
    stats = json.loads((baseline / "workload" / "profiling" / "tiny_zoo" / "stats" / "b2.json").read_text())
    assert stats["batch_size"] == 2 and stats["stats"]["count"] >= 2


def test_unobtainable_model_is_listed_not_profiled(baseline):
    manifest = json.loads((baseline / "workload" / "profiling" / "all").read_text())
    assert sorted(manifest["profiled"]) == sorted(PROFILED)
    assert "tiny_offline" in manifest["not_profiled"]
    assert manifest["not_profiled"]["tiny_offline"]["fix"].endswith(
        "then delete data/model/acquired/tiny_offline.json, and the next run acquires tiny_offline again"
    )
    assert not (baseline / "workload" / "profiling" / "tiny_offline").exists()
    report = (baseline / "reports" / "report.md").read_text()
    assert "tiny_offline" in report.split("Not profiled", 1)[1]


def test_keras_model_without_imagenet_weights_is_profiled_with_random_weights(baseline):
    status = status_of(baseline, "tiny_keras")
    weights_file = "keras_home/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96.h5"
    assert (status["status"], status["weights"], status["missing_file"]) == ("ok", "random", weights_file)
    assert "could not be fetched" in status["reason"] and "random weights" in status["reason"]
    provenance = json.loads((baseline / "workload" / "profiling" / "tiny_keras" / "provenance.json").read_text())
    assert provenance["weights"] == "random"
    report = (baseline / "reports" / "report.md").read_text()
    assert "tiny_keras ran with random weights" in report and "offline fallback" in report


def test_report_tables_and_figures_exist(baseline):
    for figure in FIGURES:
        for ext in ("png", "svg"):
            assert (baseline / "reports" / "figures" / f"{figure}.{ext}").stat().st_size > 0
    for model in PROFILED:
        assert (baseline / "reports" / "figures" / model / "distribution.png").is_file()
    tables = sorted(path.name for path in (baseline / "reports" / "tables").iterdir() if not path.name.startswith("."))
    assert tables == sorted([f"{name}.{ext}" for name in TABLES for ext in ("csv", "md")] + ["models.csv"])


def test_html_report_has_a_category_per_model(workdir):
    run = run_workflow(workdir, "--report", "reports/report.html")
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs == []  # a report reads results, it never runs a job
    html = (workdir / "reports" / "report.html").read_text(encoding="utf-8", errors="replace")
    for category in ("Overview", *PROFILED):
        assert category in html
    assert "Latency against batch size" in html  # the overview caption, rendered per figure


# ------------------------------------------------------------------ what a rerun does


@pytest.mark.parametrize("target", ["workload/profiling/all", None], ids=["manifest", "default-target"])
def test_a_second_run_does_nothing_and_its_dry_run_says_so(workdir, target):
    before = snapshot(workdir, "data/model/acquired", "data/model/inference", "workload", "reports")
    dry = run_workflow(workdir, "-n", target=target)
    assert dry.returncode == 0 and dry.nothing_to_do, dry.output[-4000:]
    run = run_workflow(workdir, target=target)
    assert run.returncode == 0 and run.nothing_to_do, run.output[-4000:]
    assert snapshot(workdir, "data/model/acquired", "data/model/inference", "workload", "reports") == before


def test_a_model_not_obtained_is_tried_again_once_its_status_is_deleted(workdir):
    status = workdir / "data" / "model" / "acquired" / "tiny_offline.json"
    failure = status.read_bytes()
    status.unlink()
    dry = run_workflow(workdir, "-n")
    assert dry.returncode == 0, dry.output[-4000:]
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    # The acquisition is a checkpoint, whose outcome no dry run can know: it lists what
    # follows a success (tiny_offline's jobs, the report's). The real run finds the same
    # status as before and runs nothing after it but the manifest, which stands for
    # every status and so is written anew when one was missing.
    assert run.jobs == [("acquire_model", {"model": "tiny_offline"}), ("manifest", {})], run.jobs
    assert set(map(job_key, run.jobs)) <= set(map(job_key, dry.jobs))
    assert {wildcards["model"] for _, wildcards in dry.jobs if "model" in wildcards} == {"tiny_offline"}, dry.jobs
    assert {"export_model", "measure_batch", "manifest"} <= dry.rules()
    assert status.read_bytes() == failure  # the same failure, the same bytes


def padded_zoo_tarball(source: Path, dest: Path, padding: int = 400_000) -> Path:
    """``source`` with an incompressible file added, so a download of it can be cut and resumed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(source, "r:gz") as original, tarfile.open(dest, "w:gz") as padded:
        for member in original.getmembers():
            padded.addfile(member, original.extractfile(member) if member.isfile() else None)
        add_file(padded, "tiny_zoo/padding.bin", os.urandom(padding))
    return dest


def test_staged_and_resumed_models_are_profiled_then_nothing_is_left_to_do(workdir, tmp_path):
    downloads = workdir / "data" / "model" / "download"
    # The tarball's top folder is tiny_zoo/, as a renamed zoo release would be. Staged, and
    # its status deleted as the fix says: the next run acquires it again.
    shutil.copy(downloads / "tiny_zoo.tar.gz", downloads / "tiny_offline.tar.gz")
    (workdir / "data" / "model" / "acquired" / "tiny_offline.json").unlink()
    late = padded_zoo_tarball(downloads / "tiny_zoo.tar.gz", tmp_path / "served" / "tiny_late.tar.gz")
    # Each try gets 100 kB before the connection drops: three tries keep part of the file.
    with FileServer(late.parent, cut_after=100_000) as server:
        config = read_config(workdir)
        config["models"]["tiny_late"] = {"source": "tf2_zoo", "type": "detection", "url": server.url_for(late.name)}
        write_config(workdir, config)
        first = run_workflow(workdir)
        assert first.returncode == 0, first.output[-4000:]
        assert sorted(job["model"] for job in first.jobs_of("acquire_model")) == ["tiny_late", "tiny_offline"]
        for rule in SERVING_RULES - {"acquire_model"}:
            assert {job["model"] for job in first.jobs_of(rule)} == {"tiny_offline"}, (rule, first.jobs)
        part = downloads / "tiny_late.tar.gz.part"
        kept = part.stat().st_size
        assert 0 < kept < late.stat().st_size
        assert f"({kept} bytes kept in" in status_of(workdir, "tiny_late")["reason"]

        server.cut_after = None  # the connection holds now
        (workdir / "data" / "model" / "acquired" / "tiny_late.json").unlink()  # ask for a new try
        second = dry_then_real(workdir)
        assert second.returncode == 0, second.output[-4000:]
        for rule in SERVING_RULES:
            assert {job["model"] for job in second.jobs_of(rule)} == {"tiny_late"}, (rule, second.jobs)
        assert server.requests[-1].range == f"bytes={kept}-" and server.requests[-1].status == 206
    assert (downloads / "tiny_late.tar.gz").read_bytes() == late.read_bytes() and not part.exists()
    manifest = json.loads((workdir / "workload" / "profiling" / "all").read_text())
    assert sorted(manifest["profiled"]) == sorted([*PROFILED, "tiny_offline", "tiny_late"])
    assert manifest["not_profiled"] == {}

    dry = run_workflow(workdir, "-n")
    assert dry.returncode == 0 and dry.nothing_to_do, dry.output[-4000:]
    config = read_config(workdir)
    config["strict"] = True  # every model was obtained: only the verdict, the manifest, is made again
    write_config(workdir, config)
    run = dry_then_real(workdir)
    assert run.jobs == [("manifest", {})], run.jobs


def test_a_model_built_with_random_weights_is_acquired_again_when_that_can_change(workdir):
    status = workdir / "data" / "model" / "acquired" / "tiny_keras.json"
    assert status_of(workdir, "tiny_keras")["fix"].endswith(
        "then delete data/model/acquired/tiny_keras.json, and the next run acquires tiny_keras again"
    )
    cached = workdir / status_of(workdir, "tiny_keras")["missing_file"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"weights staged by hand")
    dry = run_workflow(workdir, "-n")
    assert dry.returncode == 0 and dry.nothing_to_do, dry.output[-4000:]  # staging alone asks for nothing
    status.rename(status.with_suffix(".kept"))
    dry = run_workflow(workdir, "-n")
    assert [job["model"] for job in dry.jobs_of("acquire_model")] == ["tiny_keras"], dry.jobs
    status.with_suffix(".kept").rename(status)
    cached.unlink()

    config = read_config(workdir)
    config["allow_random_weights"] = False  # can change what tiny_keras's acquisition finds
    write_config(workdir, config)
    dry = run_workflow(workdir, "-n")
    assert [job["model"] for job in dry.jobs_of("acquire_model")] == ["tiny_keras"], dry.jobs

    config["allow_random_weights"] = True
    write_config(workdir, config)
    dry = run_workflow(workdir, "-n")
    assert dry.returncode == 0 and dry.nothing_to_do, dry.output[-4000:]


@pytest.mark.parametrize("target", ["workload/profiling/all", None], ids=["manifest", "default-target"])
def test_deleting_one_latency_file_recomputes_it_and_what_derives_from_it(workdir, target):
    derived = snapshot(workdir, "reports")
    (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").unlink()
    run = dry_then_real(workdir, target)
    assert run.jobs_of("measure_batch") == [{"model": "tiny_keras", "batch": "2"}]
    assert run.jobs_of("aggregate_model") == [{"model": "tiny_keras"}]
    assert run.jobs_of("plot_model") == [{"model": "tiny_keras"}]
    assert sorted(job["figure"] for job in run.jobs_of("plot_overview")) == sorted(FIGURES)
    assert {"tables", "manifest"} <= run.rules()
    assert not run.rules() & {"acquire_model", "export_model", "cold_start"}
    assert (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").is_file()
    redrawn = snapshot(workdir, "reports")
    for path in (
        "reports/report.md",
        "reports/tables/durations.csv",
        "reports/figures/latency.png",
        "reports/figures/tiny_keras/distribution.png",
    ):
        assert redrawn[path][0] > derived[path][0], path
    assert redrawn["reports/figures/tiny_zoo/distribution.png"] == derived["reports/figures/tiny_zoo/distribution.png"]
    again = run_workflow(workdir, "-n", target=target)
    assert again.returncode == 0 and again.nothing_to_do, again.output[-4000:]


def test_deleting_a_stats_file_remeasures_that_batch_size(workdir):
    (workdir / "workload" / "profiling" / "tiny_zoo" / "stats" / "b1.json").unlink()
    run = dry_then_real(workdir)
    assert run.jobs_of("measure_batch") == [{"model": "tiny_zoo", "batch": "1"}]


def test_deleting_a_table_rebuilds_it_and_deleting_a_saved_model_reruns_nothing(workdir):
    (workdir / "reports" / "tables" / "compact.md").unlink()
    shutil.rmtree(workdir / "data" / "model" / "inference" / "tiny_zoo" / "1")
    run = dry_then_real(workdir)
    assert run.rules() == {"tables", "manifest"}, run.jobs
    assert run.jobs_of("tables") == [{}]
    assert (workdir / "reports" / "tables" / "compact.md").is_file()
    assert not (workdir / "data" / "model" / "inference" / "tiny_zoo" / "1").exists()


def test_changing_a_plot_setting_reruns_only_the_plots(workdir):
    config = read_config(workdir)
    config["plots"]["dpi"] = 72
    write_config(workdir, config)
    run = dry_then_real(workdir)
    assert run.rules() == {"plot_overview", "plot_model", "manifest"}, run.jobs


def test_the_documented_redraw_command_redraws_every_figure_and_measures_nothing(workdir):
    documented = next(
        line for line in documented_commands(REPO / "README.md") if "--forcerun plot_overview plot_model" in line
    )
    tokens = shlex.split(documented)
    run = run_command(
        [
            str(BIN / "snakemake"),
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(workdir / "config.yaml"),
            *tokens[1:],
        ]
    )
    assert run.returncode == 0, run.output[-4000:]
    assert run.rules() == {"plot_overview", "plot_model", "manifest"}, run.jobs
    assert sorted(job["figure"] for job in run.jobs_of("plot_overview")) == sorted(FIGURES)


def test_changing_requests_reruns_measurements_not_downloads_or_exports(workdir):
    config = read_config(workdir)
    config["measure"]["requests"] = 15
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    measured = sorted((job["model"], job["batch"]) for job in run.jobs_of("measure_batch"))
    assert measured == [(model, batch) for model in PROFILED for batch in ("1", "2")]
    assert not run.rules() & {"acquire_model", "export_model", "cold_start"}


def test_a_per_model_batch_sizes_override_adds_only_the_new_measurement(workdir):
    config = read_config(workdir)
    config["models"]["tiny_zoo"]["batch_sizes"] = [1, 2, 4]
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs_of("measure_batch") == [{"model": "tiny_zoo", "batch": "4"}]
    assert not run.rules() & {"acquire_model", "export_model", "cold_start"}
    assert {job["model"] for job in run.jobs_of("aggregate_model")} == {"tiny_zoo"}
    durations = (workdir / "workload" / "profiling" / "tiny_zoo" / "tiny_zoo.csv").read_text().splitlines()
    assert [line.split(", ")[0] for line in durations[1:]] == ["1", "2", "4"]


def test_adding_a_model_adds_only_its_jobs(workdir, tmp_path):
    source = tmp_path / "my_saved_model"
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "classifier", str(source)], check=True, cwd=REPO
    )
    config = read_config(workdir)
    config["models"]["tiny_saved"] = {"source": "saved_model", "type": "classification", "path": str(source)}
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    for rule in SERVING_RULES | {"aggregate_model"}:
        assert {job["model"] for job in run.jobs_of(rule)} == {"tiny_saved"}, (rule, run.jobs)
    assert (workdir / "workload" / "profiling" / "tiny_saved" / "tiny_saved.csv").is_file()


LOAD_BLOCK = {
    "models": ["tiny_keras"],
    "concurrency": [2],
    "batching": {"batch_timeout_micros": [0, 1000]},
    "window_s": 0.3,
    "max_windows": 3,
    "warmup_s": 0.2,
    "slo_p99_ms": 10000,
}


def test_a_load_block_adds_one_job_per_point_and_its_report_redraws_without_measuring(workdir):
    """Load is off in the baseline; turning it on adds only its jobs, and the report redraws alone."""
    config = read_config(workdir)
    config["load"] = LOAD_BLOCK
    write_config(workdir, config)
    run = dry_then_real(workdir, target=None)
    assert run.rules() - {"all", "manifest"} == {"measure_load", "load_summary", "load_report"}, run.jobs
    assert sorted((job["model"], job["scenario"], job["point"]) for job in run.jobs_of("measure_load")) == [
        ("tiny_keras", scenario, "c2") for scenario in ("closed", "closed-t0", "closed-t1000")
    ]
    folder = workdir / "workload" / "load" / "tiny_keras"
    for scenario in ("closed", "closed-t0", "closed-t1000"):
        requests = pd.read_csv(folder / scenario / "c2.csv")
        assert list(requests.columns) == ["window", "scheduled_ms", "sent_ms", "done_ms", "latency_ms", "status"]
        assert len(requests) > 0 and set(requests["status"]) == {"OK"}
        point = json.loads((folder / scenario / "c2.json").read_text())
        assert point["batching"] == (None if scenario == "closed" else {"batch_timeout_micros": int(scenario[8:])})
        assert 2 <= point["windows_measured"] <= 3
    summary = pd.read_csv(folder / "summary.csv")
    assert sorted(summary["scenario"]) == ["closed", "closed-t0", "closed-t1000"]
    assert (summary["throughput_per_s"] > 0).all() and (summary["p99_ms"] >= summary["p50_ms"]).all()
    report = workdir / "reports" / "load"
    best = pd.read_csv(report / "best.csv")
    assert set(best["model"]) == {"tiny_keras"}
    parameters = (report / "tiny_keras" / "batching_parameters.txt").read_text()
    # TF Serving's own text format: the file parses as a BatchingParameters message, comment line included.
    chosen = text_format.Parse(parameters, message_class("BatchingParameters")())
    assert chosen.batch_timeout_micros.value in (0, 1000)
    for figure in ("latency_throughput", "batching_heatmap"):
        for ext in ("png", "svg"):
            assert (report / "tiny_keras" / f"{figure}.{ext}").stat().st_size > 0
    measured = snapshot(workdir, "workload/load")
    redraw = run_workflow(workdir, "--forcerun", "load_report", target=None)
    assert redraw.returncode == 0, redraw.output[-4000:]
    assert redraw.rules() - {"all", "manifest"} == {"load_report"}, redraw.jobs
    assert snapshot(workdir, "workload/load") == measured
    again = run_workflow(workdir, "-n", target=None)
    assert again.returncode == 0 and again.nothing_to_do, again.output[-4000:]


def test_strict_mode_fails_on_an_unobtainable_model(tmp_path):
    config = tiny_test_config("http://127.0.0.1:9/tiny_zoo.tar.gz")
    config["models"] = {"tiny_offline": OFFLINE_MODEL}
    config["strict"] = True
    write_config(tmp_path, config)
    run = run_workflow(tmp_path)
    assert run.returncode != 0
    assert "strict is true, and 1 model(s) were not profiled" in run.output and "tiny_offline" in run.output
    assert status_of(tmp_path, "tiny_offline")["status"] == "unavailable"
    assert (tmp_path / "reports" / "report.md").is_file()  # the report says why
    assert not (tmp_path / "workload" / "profiling" / "all").exists()  # the verdict: no manifest


# ------------------------------------------------------------------ documented commands and files


def documented_commands(path: Path) -> list[str]:
    """The `snakemake ...` commands in ``path``: lines that start with one, and inline code spans."""
    text = path.read_text().replace("\\\n", " ")
    lines = re.findall(r"^[ \t]*#?[ \t]*(snakemake .*)$", text, flags=re.MULTILINE)
    spans = re.findall(r"`(snakemake [^`]*)`", text)
    return [command.split("  #", 1)[0].strip() for command in lines + spans]


@pytest.mark.parametrize(
    "document",
    ["README.md", "docs/models.md", "docs/hpc.md", "config/config.yaml", ".test/config.yaml", ".test/sheet.yaml"],
)
def test_documented_commands_keep_their_targets(document):
    """An option taking several values (--configfile, --sdm) must not swallow the target."""
    commands = documented_commands(REPO / document)
    if document not in ("docs/models.md", "docs/hpc.md"):
        assert commands, f"no snakemake command found in {document}"
    for command in commands:
        tokens = shlex.split(command)[1:]
        args = get_argument_parser().parse_args(tokens)
        written = [token for token in tokens if token.startswith(("workload/", "data/model/acquired/"))]
        assert set(written) <= set(args.targets), (document, command, args.targets)
        assert all(Path(path).suffix in (".yaml", ".yml") for path in args.configfile or []), (document, command)


def test_default_config_and_the_documented_configfile_command(tmp_path):
    """The repository's config/config.yaml, alone and replaced by a file of models as README.md shows it."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "my-models.yaml").write_text(yaml.safe_dump({"models": {"mine": FALLBACK_KERAS}}))
    documented = next(line for line in documented_commands(REPO / "README.md") if "--configfile my-models.yaml" in line)
    snakefile = ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"]

    default = run_command([str(BIN / "snakemake"), "--cores", "1", "workload/profiling/all", *snakefile])
    assert default.returncode == 0, default.output[-4000:]
    reference = yaml.safe_load((REPO / "config" / "models.yaml").read_text())
    assert sorted(job["model"] for job in default.jobs_of("acquire_model")) == sorted(reference)

    tokens = shlex.split(documented)
    mine = run_command(
        [str(BIN / "snakemake"), *[str(tmp_path / t) if t == "my-models.yaml" else t for t in tokens[1:]], *snakefile]
    )
    assert mine.returncode == 0, mine.output[-4000:]
    assert [job["model"] for job in mine.jobs_of("acquire_model")] == ["mine"], mine.jobs


@pytest.mark.parametrize("test_config", sorted(path.name for path in (REPO / ".test").glob("*.yaml")))
def test_each_test_config_runs_with_configfile_alone(tmp_path, test_config):
    """CI's way: `--configfile .test/<name>.yaml`, with the repository's default config beside it."""
    shutil.copytree(REPO / ".test", tmp_path / ".test")
    shutil.copytree(REPO / "config", tmp_path / "config")
    dry = run_command(workflow_command(tmp_path, "-n", configfile=Path(".test") / test_config))
    assert dry.returncode == 0, dry.output[-4000:]
    assert sorted(job["model"] for job in dry.jobs_of("acquire_model")) == ["tiny_keras", "tiny_zoo"], dry.jobs


def test_the_workflow_uses_no_snakemake_internals():
    """The check the repository's hook makes: none of Snakemake's private DAG or config state."""
    internals = re.compile(r"workflow\.dag|forcefiles|overwrite_config|_is_deriving")
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        found = [line for line in path.read_text().splitlines() if internals.search(line)]
        assert not found, (path.name, found)


def test_conda_environment_lists_the_package_dependencies():
    """envs/serveprof.yaml is copied into .snakemake/conda/ before use, so it cannot name this checkout."""
    env = yaml.safe_load((REPO / "envs" / "serveprof.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pip == project["dependencies"]
    # Snakemake runs the workflow (the `workflow` extra); a job's environment does not need it.
    assert not [dependency for dependency in pip if dependency.startswith("snakemake")]
    assert all(
        not dependency.startswith("snakemake") or "==" not in dependency
        for dependency in project["optional-dependencies"]["workflow"]
    )


def run_post_deploy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    """envs/serveprof.post-deploy.sh as Snakemake runs it, with a `python` that records its arguments."""
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    stub.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\n')
    stub.chmod(0o755)
    # Snakemake looks for <env>.post-deploy.sh beside <env>.yaml (snakemake.deployment.conda).
    script = REPO / "envs" / "serveprof.post-deploy.sh"
    env = dict(os.environ, PATH=f"{stub.parent}{os.pathsep}{os.environ['PATH']}", SERVEPROF_SOURCE=source)
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)


def test_conda_post_deploy_script_installs_serveprof_from_the_checkout(tmp_path):
    done = run_post_deploy(tmp_path, str(REPO))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "called").read_text().split() == ["-m", "pip", "install", "--no-deps", "--editable", str(REPO)]


def test_conda_post_deploy_script_without_a_checkout_names_the_fix(tmp_path):
    refused = run_post_deploy(tmp_path, str(tmp_path))
    assert refused.returncode == 1 and not (tmp_path / "called").exists()
    assert "is not a serveprof checkout" in refused.stderr and "export SERVEPROF_SOURCE=" in refused.stderr
