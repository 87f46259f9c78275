"""The real workflow, end to end and incremental, on the tiny test config.

Snakemake runs as a subprocess in a scratch directory, with no network but loopback
and an empty Keras cache (tests/workflow_runner.py). tiny_zoo's tarball is a
zoo-shaped release built by the test and downloaded over HTTP from loopback, so the
download and the batch wrapping run for real; tiny_keras asks for ImageNet weights,
which cannot be fetched, so it is exported and profiled with random weights;
tiny_offline points at a closed port and must end up "not profiled" without sinking
the run.

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
import tomllib
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.cli import get_argument_parser

from tests.fixtures.http_server import FileServer
from tests.fixtures.tarballs import add_file
from tests.workflow_runner import BIN, REPO, Run, read_config, run_command, run_workflow, tiny_test_config, write_config

pytestmark = pytest.mark.slow

OFFLINE_MODEL = {"source": "tf2_zoo", "type": "detection", "url": "http://127.0.0.1:9/tiny_offline.tar.gz"}
# ImageNet weights (the default) at a size they exist for; unreachable here.
FALLBACK_KERAS = {"source": "keras", "type": "classification", "application": "MobileNetV2", "input_size": [96, 96]}
PROFILED = ("tiny_keras", "tiny_zoo")
SERVING_RULES = {"acquire_model", "export_model", "cold_start", "measure_batch"}
FIGURES = ("latency", "throughput", "coldstart", "resources")
TABLES = ("coldstart", "durations", "compact", "percentiles", "resources", "not_profiled")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    directory = tmp_path_factory.mktemp("served")
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "zoo-tarball", str(directory / "tiny_zoo.tar.gz"), "--name", "tiny_zoo"],
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


def assert_only_retries(run: Run, *models: str) -> None:
    """Nothing ran but the acquisition of models not obtained, and the manifest's and report's jobs."""
    assert run.returncode == 0, run.output[-4000:]
    assert sorted(job["model"] for job in run.jobs_of("acquire_model")) == sorted(models), run.jobs
    assert run.rules() <= {"acquire_model", "tables", "all"}, run.jobs


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
        coldstart = pd.read_csv(folder / "coldstart.csv")
        assert coldstart.loc[0, "load_ms"] > 0 and coldstart.loc[0, "first_infer_ms"] > 0
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
    assert manifest["not_profiled"]["tiny_offline"]["fix"]
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


def test_a_second_run_only_tries_the_unobtained_model_again(workdir):
    before = snapshot(workdir, "data/model/acquired", "data/model/inference", "workload", "reports")
    run = run_workflow(workdir)
    assert_only_retries(run, "tiny_offline")
    after = snapshot(workdir, "data/model/acquired", "data/model/inference", "workload", "reports")
    retried = "data/model/acquired/tiny_offline.json"
    assert after[retried][1] == before[retried][1]  # the same failure, the same bytes
    del after[retried], before[retried]
    # The status did not change, so neither did the report and the manifest made from it.
    assert after == before, sorted(path for path in after if after[path] != before.get(path))
    assert run.jobs == [("acquire_model", {"model": "tiny_offline"})], run.jobs


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
    # The tarball's top folder is tiny_zoo/, as a renamed zoo release would be.
    shutil.copy(downloads / "tiny_zoo.tar.gz", downloads / "tiny_offline.tar.gz")
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
        second = run_workflow(workdir)
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
    config["strict"] = True  # changes nothing for models that were obtained
    write_config(workdir, config)
    dry = run_workflow(workdir, "-n")
    assert dry.returncode == 0 and dry.nothing_to_do, dry.output[-4000:]


def test_a_model_built_with_random_weights_is_acquired_again_when_that_can_change(workdir):
    cached = workdir / status_of(workdir, "tiny_keras")["missing_file"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"weights staged by hand")
    dry = run_workflow(workdir, "-n")
    assert sorted(job["model"] for job in dry.jobs_of("acquire_model")) == ["tiny_keras", "tiny_offline"], dry.jobs
    cached.unlink()

    config = read_config(workdir)
    config["allow_random_weights"] = False
    write_config(workdir, config)
    dry = run_workflow(workdir, "-n")
    assert sorted(job["model"] for job in dry.jobs_of("acquire_model")) == ["tiny_keras", "tiny_offline"], dry.jobs

    config["allow_random_weights"], config["strict"] = True, True
    write_config(workdir, config)
    dry = run_workflow(workdir, "-n")
    assert [job["model"] for job in dry.jobs_of("acquire_model")] == ["tiny_offline"], dry.jobs
    assert dry.rules() <= {"acquire_model", "all"}, dry.jobs


def test_deleting_one_latency_file_recomputes_it_and_what_derives_from_it(workdir):
    derived = snapshot(workdir, "reports")
    (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").unlink()
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs_of("measure_batch") == [{"model": "tiny_keras", "batch": "2"}]
    assert run.jobs_of("aggregate_model") == [{"model": "tiny_keras"}]
    assert run.jobs_of("plot_model") == [{"model": "tiny_keras"}]
    assert sorted(job["figure"] for job in run.jobs_of("plot_overview")) == sorted(FIGURES)
    assert {"tables", "all"} <= run.rules()
    assert [job["model"] for job in run.jobs_of("acquire_model")] == ["tiny_offline"]  # the retry
    assert not run.rules() & {"export_model", "cold_start"}
    assert (workdir / "workload" / "profiling" / "tiny_keras" / "tiny_keras-b2.csv").is_file()
    redrawn = snapshot(workdir, "reports")
    for path in ("reports/report.md", "reports/tables/durations.csv", "reports/figures/latency.png",
                 "reports/figures/tiny_keras/distribution.png"):
        assert redrawn[path][0] > derived[path][0], path
    assert redrawn["reports/figures/tiny_zoo/distribution.png"] == derived["reports/figures/tiny_zoo/distribution.png"]


def test_deleting_a_table_rebuilds_it_and_deleting_a_saved_model_reruns_nothing(workdir):
    (workdir / "reports" / "tables" / "compact.md").unlink()
    shutil.rmtree(workdir / "data" / "model" / "inference" / "tiny_zoo" / "1")
    run = run_workflow(workdir)
    assert_only_retries(run, "tiny_offline")
    assert run.jobs_of("tables") == [{}]
    assert (workdir / "reports" / "tables" / "compact.md").is_file()
    assert not (workdir / "data" / "model" / "inference" / "tiny_zoo" / "1").exists()


def test_changing_a_plot_setting_reruns_only_the_plots(workdir):
    config = read_config(workdir)
    config["plots"]["dpi"] = 72
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.rules() - {"all", "acquire_model"} == {"plot_overview", "plot_model"}, run.jobs
    assert [job["model"] for job in run.jobs_of("acquire_model")] == ["tiny_offline"]


def test_changing_requests_reruns_measurements_not_downloads_or_exports(workdir):
    config = read_config(workdir)
    config["measure"]["requests"] = 15
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    measured = sorted((job["model"], job["batch"]) for job in run.jobs_of("measure_batch"))
    assert measured == [(model, batch) for model in PROFILED for batch in ("1", "2")]
    assert [job["model"] for job in run.jobs_of("acquire_model")] == ["tiny_offline"]
    assert not run.rules() & {"export_model", "cold_start"}


def test_a_per_model_batch_sizes_override_adds_only_the_new_measurement(workdir):
    config = read_config(workdir)
    config["models"]["tiny_zoo"]["batch_sizes"] = [1, 2, 4]
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    assert run.jobs_of("measure_batch") == [{"model": "tiny_zoo", "batch": "4"}]
    assert [job["model"] for job in run.jobs_of("acquire_model")] == ["tiny_offline"]
    assert not run.rules() & {"export_model", "cold_start"}
    assert {job["model"] for job in run.jobs_of("aggregate_model")} == {"tiny_zoo"}
    durations = (workdir / "workload" / "profiling" / "tiny_zoo" / "tiny_zoo.csv").read_text().splitlines()
    assert [line.split(", ")[0] for line in durations[1:]] == ["1", "2", "4"]


def test_adding_a_model_adds_only_its_jobs(workdir, tmp_path):
    source = tmp_path / "my_saved_model"
    subprocess.run([sys.executable, "-m", "tests.fixtures.tiny_models", "classifier", str(source)], check=True, cwd=REPO)
    config = read_config(workdir)
    config["models"]["tiny_saved"] = {"source": "saved_model", "type": "classification", "path": str(source)}
    write_config(workdir, config)
    run = run_workflow(workdir)
    assert run.returncode == 0, run.output[-4000:]
    for rule in SERVING_RULES | {"aggregate_model"}:
        expected = {"tiny_saved", "tiny_offline"} if rule == "acquire_model" else {"tiny_saved"}
        assert {job["model"] for job in run.jobs_of(rule)} == expected, (rule, run.jobs)
    assert (workdir / "workload" / "profiling" / "tiny_saved" / "tiny_saved.csv").is_file()


def test_strict_mode_fails_on_an_unobtainable_model(tmp_path):
    config = tiny_test_config("http://127.0.0.1:9/tiny_zoo.tar.gz")
    config["models"] = {"tiny_offline": OFFLINE_MODEL}
    config["strict"] = True
    write_config(tmp_path, config)
    run = run_workflow(tmp_path)
    assert run.returncode != 0
    assert "tiny_offline" in run.output
    assert not (tmp_path / "data" / "model" / "acquired" / "tiny_offline.json").exists()


# ------------------------------------------------------------------ documented commands and files


def documented_commands(path: Path) -> list[str]:
    """The `snakemake ...` commands in ``path``: lines that start with one, and inline code spans."""
    text = path.read_text().replace("\\\n", " ")
    lines = re.findall(r"^[ \t]*#?[ \t]*(snakemake .*)$", text, flags=re.MULTILINE)
    spans = re.findall(r"`(snakemake [^`]*)`", text)
    return [command.split("  #", 1)[0].strip() for command in lines + spans]


@pytest.mark.parametrize("document", ["README.md", "docs/models.md", "config.yaml", ".test/config.yaml"])
def test_documented_commands_keep_their_targets(document):
    """An option taking several values (--configfile, --sdm) must not swallow the target."""
    commands = documented_commands(REPO / document)
    if document != "docs/models.md":
        assert commands, f"no snakemake command found in {document}"
    for command in commands:
        tokens = shlex.split(command)[1:]
        args = get_argument_parser().parse_args(tokens)
        written = [token for token in tokens if token.startswith(("workload/", "data/model/acquired/"))]
        assert set(written) <= set(args.targets), (document, command, args.targets)
        assert all(Path(path).suffix in (".yaml", ".yml") for path in args.configfile or []), (document, command)


def test_default_config_and_the_documented_configfile_command(tmp_path):
    """The repository's config.yaml, alone and replaced by a file of models as README.md shows it."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "my-models.yaml").write_text(yaml.safe_dump({"models": {"mine": FALLBACK_KERAS}}))
    documented = next(line for line in documented_commands(REPO / "README.md") if "--configfile my-models.yaml" in line)
    snakefile = ["-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n"]

    default = run_command([str(BIN / "snakemake"), "--cores", "1", "workload/profiling/all", *snakefile])
    assert default.returncode == 0, default.output[-4000:]
    assert sorted(job["model"] for job in default.jobs_of("acquire_model")) == sorted(yaml.safe_load((REPO / "config.yaml").read_text())["models"])

    tokens = shlex.split(documented)
    mine = run_command([str(BIN / "snakemake"), *[str(tmp_path / t) if t == "my-models.yaml" else t for t in tokens[1:]], *snakefile])
    assert mine.returncode == 0, mine.output[-4000:]
    assert [job["model"] for job in mine.jobs_of("acquire_model")] == ["mine"], mine.jobs


def test_conda_environment_lists_the_package_dependencies():
    """envs/serveprof.yaml is copied into .snakemake/conda/ before use, so it cannot name this checkout."""
    env = yaml.safe_load((REPO / "envs" / "serveprof.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pip == project["dependencies"]


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
