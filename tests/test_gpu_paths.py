"""The GPU paths, on a machine without a GPU: what they sample, draw, submit and launch.

No test here touches a GPU. The sampler reads a stand-in ``nvidia-smi`` (a script that
answers ``--query-gpu ... --format=csv,noheader,nounits`` as the real one does, for two
GPUs), so the measurement, aggregation, report and figure code that handles its numbers
runs for real. The SLURM submissions are read from a dry run of the real workflow with
each profile, and the launcher's Docker and Apptainer command lines are built, not run.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from serveprof.errors import ServeprofError
from serveprof.launch.commands import build_command, server_environment
from serveprof.launch.gpus import host_gpus, visible_gpus
from serveprof.launch.spec import ServerSpec
from serveprof.measure.aggregate import aggregate
from serveprof.measure.procedure import ProcedureSettings, measure_series
from serveprof.measure.resources import NvidiaSmiProbe
from serveprof.measure.result_files import write_measurement
from serveprof.report.figures import build_resources_figure
from serveprof.report.results import load_summary
from serveprof.report.style import model_looks
from serveprof.settings import server_settings
from serveprof.settings import style as parse_style
from serveprof.variants import report as variants_report
from tests.test_aggregate import stats_doc
from tests.workflow_runner import REPO, run_workflow, tiny_test_config, write_config

STYLE = parse_style({"formats": ["png"], "dpi": 50})
GPU_PANELS = ["GPU utilisation (%)", "GPU memory (MiB)"]
# Two GPUs, as `nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` prints them;
# with --id=1 only the second. The utilisation grows with each call, so a mean over samples shows.
NVIDIA_SMI = """#!/bin/sh
count=$(cat "$0.calls" 2>/dev/null || echo 0); count=$((count + 1)); echo $count > "$0.calls"
case "$*" in
  *--query-gpu=name*) echo "Stand-in GPU A"; echo "Stand-in GPU B" ;;
  *--id=1*) echo "$((40 + count)), 3000" ;;
  *) echo "$((10 + count)), 1000"; echo "$((40 + count)), 3000" ;;
esac
"""


def stand_in_nvidia_smi(folder: Path) -> Path:
    path = folder / "nvidia-smi"
    path.write_text(NVIDIA_SMI)
    path.chmod(0o755)
    return path


def measured_run(tmp_path: Path, gpu, model: str = "tiny") -> Path:
    """Two batch sizes measured by the real procedure (a sleeping stand-in for the server), written by the
    measure command's writer and aggregated by serveprof's aggregation; the profiling folder."""
    settings = ProcedureSettings(requests=15, max_seconds=5, min_requests=2, warmup_requests=1,
                                 warmup_max_seconds=1, resource_interval_s=0.02)  # fmt: skip
    folder = tmp_path / "profiling" / model
    (folder / "stats").mkdir(parents=True)
    stats, latencies = [], []
    for batch in (1, 4):
        series, fields = measure_series(
            lambda request: time.sleep(0.004), None, batch, settings, pid=None,
            on_error=lambda error, what: error, log=lambda line: None, gpu=gpu,
        )  # fmt: skip
        doc = {**stats_doc(batch, fields["stats"]["mean_ms"], "2026-12-06T10:00:00+00:00", model=model), **fields}
        stats.append(folder / "stats" / f"b{batch}.json")
        latencies.append(folder / f"{model}-b{batch}.csv")
        write_measurement(latencies[-1], stats[-1], series, doc)
    acquired = tmp_path / "acquired.json"
    acquired.write_text(json.dumps({"model": model, "status": "ok", "source": "keras", "weights": "random"}))
    aggregate(model, stats, None, acquired, "0123456789abcdef", folder, latencies)
    return tmp_path / "profiling"


def panel_labels(fig) -> list[str]:
    return [ax.get_ylabel() for ax in fig.axes if ax.get_visible()]


def test_sampled_gpu_figures_reach_summary_and_the_resources_figure(tmp_path, monkeypatch):
    smi = stand_in_nvidia_smi(tmp_path)
    # The job was given GPU 1 of the node's two: only that one is read.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    probe = NvidiaSmiProbe(str(smi), visible_gpus())
    assert probe.query_command("utilization.gpu,memory.used")[-1] == "--id=1"
    summary = load_summary(measured_run(tmp_path / "gpu", probe), ["tiny"])
    assert summary["gpu_mem_mb"].tolist() == [3000.0, 3000.0]  # GPU 1 alone, not the sum of both
    assert (summary["gpu_util_pct"] > 40).all() and summary["gpu_util_pct"].nunique() == 2
    fig = build_resources_figure(summary, model_looks(["tiny"], STYLE), STYLE)
    assert panel_labels(fig)[2:] == GPU_PANELS
    plotted = next(line for line in fig.findobj() if getattr(line, "get_gid", lambda: None)() == "gpu_mem_mb:tiny")
    assert list(plotted.get_ydata()) == [3000.0, 3000.0]
    # Unrestricted, NVML's view: every GPU, the utilisation averaged and the memory summed.
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    whole = load_summary(measured_run(tmp_path / "node", NvidiaSmiProbe(str(smi), visible_gpus())), ["tiny"])
    assert whole["gpu_mem_mb"].tolist() == [4000.0, 4000.0]
    # No GPU: empty columns and no GPU panel.
    none = load_summary(measured_run(tmp_path / "cpu", None), ["tiny"])
    assert none["gpu_util_pct"].isna().all() and none["gpu_mem_mb"].isna().all()
    assert panel_labels(build_resources_figure(none, model_looks(["tiny"], STYLE), STYLE)) == [
        "server memory, RSS (MiB)",
        "server CPU (% of one core)",
    ]


def test_the_variants_report_draws_gpu_panels_per_variant(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    probe = NvidiaSmiProbe(str(stand_in_nvidia_smi(tmp_path)), visible_gpus())
    results = tmp_path / "workload"
    measured_run(results, probe, "net")  # fp32: workload/profiling/net
    measured_run(results / "variants" / "fp16", probe, "net")
    variants = {"net": ["fp32", "fp16"]}
    frame = variants_report.resources(results, variants)
    assert sorted(frame["model"].unique()) == ["net fp16", "net fp32"]
    fig = variants_report.resources_figure(frame, STYLE)
    assert panel_labels(fig)[2:] == GPU_PANELS
    gids = {artist.get_gid() for artist in fig.findobj() if getattr(artist, "get_gid", lambda: None)()}
    assert {"gpu_util_pct:net fp32", "gpu_util_pct:net fp16", "gpu_mem_mb:net fp16"} <= gids
    written = variants_report.write(results, tmp_path / "statuses", variants, tmp_path / "out", STYLE)
    assert written["resources png"].stat().st_size > 0
    # Without GPU samples, no GPU panel.
    cpu = tmp_path / "cpu" / "workload"
    measured_run(cpu, None, "net")
    measured_run(cpu / "variants" / "fp16", None, "net")
    fig = variants_report.resources_figure(variants_report.resources(cpu, variants), STYLE)
    assert not set(GPU_PANELS) & set(panel_labels(fig))


def test_a_job_s_gpus_come_from_the_scheduler(monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(name, raising=False)
    assert visible_gpus() is None and host_gpus() is None  # not restricted: every GPU
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == () == visible_gpus({"CUDA_VISIBLE_DEVICES": ""})
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,GPU-8f3c"}) == ("2", "GPU-8f3c")
    # With cgroup-constrained devices SLURM numbers the job's GPUs from 0; the node's own index is in SLURM_JOB_GPUS.
    assert host_gpus({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "3"}) == ("3",)
    assert host_gpus({"CUDA_VISIBLE_DEVICES": "1"}) == ("1",)


def spec(tmp_path: Path, backend: str) -> ServerSpec:
    settings = server_settings({"backend": backend, "gpu": True, "apptainer_path": "apptainer"})
    return ServerSpec.serving(settings, "tiny", str(tmp_path / "models" / "tiny"))


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({}, "all"),
        ({"CUDA_VISIBLE_DEVICES": "2"}, "device=2"),
        ({"CUDA_VISIBLE_DEVICES": "0", "SLURM_JOB_GPUS": "5"}, "device=5"),
        ({"CUDA_VISIBLE_DEVICES": "0,1"}, '"device=0,1"'),  # one CSV field for docker's --gpus
    ],
)
def test_docker_is_given_the_job_s_gpu(tmp_path, monkeypatch, environment, expected):
    for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    command = build_command(spec(tmp_path, "docker"), "docker", 8600, 8601, name="c")
    assert command[command.index("--gpus") + 1] == expected
    assert "tensorflow/serving:latest-gpu" in command


def test_a_gpu_run_in_a_job_without_a_gpu_is_refused_for_docker(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    monkeypatch.delenv("SLURM_JOB_GPUS", raising=False)
    with pytest.raises(ServeprofError, match="given no GPU") as refused:
        build_command(spec(tmp_path, "docker"), "docker", 8600, 8601, name="c")
    assert "server.gpu: false" in refused.value.fix


def test_apptainer_and_the_binary_keep_the_job_s_cuda_visible_devices(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    command = build_command(spec(tmp_path, "apptainer"), "apptainer", 8600, 8601)
    assert command[:3] == ["apptainer", "exec", "--nv"]  # the host's driver and devices in the container
    # None: the server starts with our environment, the scheduler's CUDA_VISIBLE_DEVICES included
    # (Apptainer passes the host's environment into the container).
    for backend in ("apptainer", "tfserving", "embedded"):
        assert server_environment(spec(tmp_path, backend), backend) is None


def submitted(dry_output: str, rule: str) -> list[str]:
    jobs = re.split(r"\n(?=\[)", dry_output)
    return [job for job in jobs if re.search(rf"^(local)?rule {rule}:$", job, re.M)]


def test_slurm_profiles_ask_for_one_gpu_per_serving_job(tmp_path):
    """A dry run with profiles/slurm-gpu and server.gpu: true: what each serving job would ask SLURM for."""
    config = tiny_test_config("http://127.0.0.1:9/tiny_zoo.tar.gz")
    config["server"]["gpu"] = True
    write_config(tmp_path, config)
    # profiles/slurm's --exclusive on the same jobs is checked on a real cluster (tests/test_slurm.py).
    # --cores 4: a dry run caps threads at the local cores; SLURM gives each job its own.
    dry = run_workflow(tmp_path, "-n", "--cores", "4", "--profile", str(REPO / "profiles" / "slurm-gpu"), timeout=300)
    assert dry.returncode == 0, dry.output[-4000:]
    serving = submitted(dry.output, "measure_batch") + submitted(dry.output, "cold_start")
    assert len(serving) == 6, dry.output[-3000:]  # 2 models x (2 batch sizes + cold start)
    for job in serving:
        # --gpus=1 (the plugin's form of gpu=1) with the rule's CPUs and memory, and no whole node.
        assert re.search(r"\bgpu=1\b", job) and "mem_mb=16000" in job and "threads: 4" in job, job
        assert "--exclusive" not in job, job
    for job in submitted(dry.output, "export_model"):
        assert not re.search(r"\bgpu=1\b", job), job  # exporting needs no GPU
