"""The workflow through the SLURM profile, on a real one-node SLURM cluster.

ci/slurm/start-cluster.sh installs Debian's slurm-wlm and munge when they are missing
and starts munged, slurmctld and slurmd on this machine; the session fixture always
stops them again. The tiny test config then runs twice, in two scratch directories:
once locally (the reference) and once with `--profile profiles/slurm`, whose jobs go
through sbatch. The test reads the jobs back from slurmctld and compares the two
result trees.

Needs root (packages, daemons, and sbatch jobs that run as root); skipped otherwise.
The test cluster has no accounting database, so the command line adds
`--slurm-status-command squeue --slurm-no-account`: they are not in the profile users
get.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import yaml

from tests.workflow_runner import BIN, REPO, Run, parse_jobs, run_workflow, tiny_test_config, write_config

START = REPO / "ci" / "slurm" / "start-cluster.sh"
STOP = REPO / "ci" / "slurm" / "stop-cluster.sh"
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
DAEMONS = ("munged", "slurmctld", "slurmd")
CLUSTER_NAME = "serveprof-ci"  # ClusterName in the slurm.conf start-cluster.sh writes
# The tarball's URL is unreachable on purpose: the model comes from the staged copy in
# data/model/download/, as it does on compute nodes without internet (docs/hpc.md).
ZOO_URL = "http://127.0.0.1:9/tiny_zoo.tar.gz"
PROFILED = ("tiny_keras", "tiny_zoo")
# Jobs the cluster must run: everything but the workflow's localrules.
CLUSTER_JOBS = {"export_model": 2, "cold_start": 2, "measure_batch": 4}
EXCLUSIVE_RULES = ("cold_start", "measure_batch")
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+)")
SUMMARY_COLUMNS = (
    "model, batch_size, count, mean_ms, std_ms, min_ms, max_ms, p50_ms, p90_ms, p95_ms, p99_ms, "
    "throughput_per_s, first_init_ms, first_aot_ms, requests_target, truncated, truncated_reason, "
    "low_sample_percentiles, cpu_util_pct, rss_peak_mb, rss_mean_mb, gpu_util_pct, gpu_mem_mb, protocol, backend"
).split(", ")
COLDSTART_COLUMNS = ["model", "load_ms", "first_infer_ms", "backend", "backend_version"]


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: installs SLURM with apt-get and runs slurmctld, slurmd and munged (run as root, as CI does)"
    sbin = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    if not all(shutil.which(tool, path=sbin) for tool in DAEMONS) and not shutil.which("apt-get"):
        return "SLURM and munge are not installed and there is no apt-get to install them"
    default_conf = Path("/etc/slurm/slurm.conf")
    if default_conf.exists() and not default_conf.is_symlink():
        return "this machine has its own SLURM configuration in /etc/slurm; the test cluster would replace it"
    return None


SKIP_REASON = skip_reason()
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.slow,
    pytest.mark.timeout(2400),
    pytest.mark.skipif(SKIP_REASON is not None, reason=SKIP_REASON or ""),
]


class Cluster:
    def __init__(self, conf: Path):
        self.conf = conf
        self.home = conf.parent.parent
        self.env = dict(os.environ, SLURM_CONF=str(conf))

    def pid_files(self) -> dict[str, Path]:
        return {
            "munged": self.home / "munge" / "munged.pid",
            "slurmctld": self.home / "run" / "slurmctld.pid",
            "slurmd": self.home / "run" / "slurmd.pid",
        }

    def scontrol(self, *args: str) -> str:
        return subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, check=True).stdout

    def node(self) -> dict[str, str]:
        return fields(self.scontrol("show", "node", "-o"))

    def job(self, job_id: str) -> dict[str, str]:
        return fields(self.scontrol("show", "job", "-o", job_id))


def fields(line: str) -> dict[str, str]:
    """`scontrol -o` prints one record as space-separated Key=Value pairs."""
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def our_job_processes() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter():
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue
        if environ.get("SLURM_CLUSTER_NAME") == CLUSTER_NAME:
            found.append(process)
    return found


@pytest.fixture(scope="session")
def cluster():
    pids: dict[str, int] = {}
    started = subprocess.run(["bash", str(START)], capture_output=True, text=True, timeout=900)
    try:
        assert started.returncode == 0, f"start-cluster.sh failed:\n{started.stdout}\n{started.stderr}"
        conf = Path(started.stdout.strip().splitlines()[-1].removeprefix("SLURM_CONF="))
        handle = Cluster(conf)
        pids.update({name: int(path.read_text()) for name, path in handle.pid_files().items()})
        yield handle
    finally:
        stopped = subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=300)
        again = subprocess.run(["bash", str(STOP)], capture_output=True, text=True, timeout=300)
    # Checked after the stops above have run whatever happened, so a failure here
    # is a teardown error that fails the run.
    assert stopped.returncode == 0, stopped.stderr
    assert again.returncode == 0, f"a second stop-cluster.sh failed: {again.stderr}"
    left = {name: pid for name, pid in pids.items() if psutil.pid_exists(pid)}
    assert not left, f"daemons still running after stop-cluster.sh: {left}"
    assert not our_job_processes(), "job processes of the test cluster outlived it"
    assert not Path("/etc/slurm/slurm.conf").is_symlink(), "stop-cluster.sh left its /etc/slurm/slurm.conf link"


@pytest.fixture(scope="session")
def tarball(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("zoo") / "tiny_zoo.tar.gz"
    subprocess.run(
        [sys.executable, "-m", "tests.fixtures.tiny_models", "zoo-tarball", str(path), "--name", "tiny_zoo"],
        check=True,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    return path


def prepare(workdir: Path, tarball: Path) -> Path:
    write_config(workdir, tiny_test_config(ZOO_URL))
    staged = workdir / "data" / "model" / "download"
    staged.mkdir(parents=True)
    shutil.copy(tarball, staged / tarball.name)
    return workdir


def profile_for(node: dict[str, str], directory: Path) -> Path:
    """profiles/slurm, with memory requests lowered to a third of the test node's.

    A CI runner may have less memory than the 16 GB the profile asks of a serving job,
    and SLURM refuses a request no node can meet. A third also lets two 1-CPU jobs
    share the node, so only --exclusive keeps serving jobs apart (see run_on_cluster).
    Every other key is kept as it is.
    """
    profile = yaml.safe_load(PROFILE.read_text())
    node_mb = int(node["RealMemory"]) // 3
    for resources in [profile["default-resources"], *profile["set-resources"].values()]:
        if "mem_mb" in resources:
            resources["mem_mb"] = min(int(resources["mem_mb"]), node_mb)
    directory.mkdir()
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def run_on_cluster(cluster: Cluster, workdir: Path, profile: Path) -> Run:
    env = dict(cluster.env, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--profile", str(profile),
        # Only because the test cluster has no accounting database (see the docstring).
        "--slurm-status-command", "squeue", "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "2",
        # One CPU per job and two serving jobs queued at once: the node has room for
        # two jobs, so it is SLURM (--exclusive), not the CPUs, memory or Snakemake's
        # slot, that keeps a serving job off a node another job is using.
        "--max-threads", "1",
        "--resources", "serving_slot=2",
        "--", "workload/profiling/all",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=2000, env=env, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    return Run(result.returncode, output, parse_jobs(output))


@pytest.fixture(scope="session")
def runs(cluster, tarball, tmp_path_factory):
    local_dir = prepare(tmp_path_factory.mktemp("local"), tarball)
    local = run_workflow(local_dir)
    assert local.returncode == 0, local.output[-6000:]
    slurm_dir = prepare(tmp_path_factory.mktemp("slurm"), tarball)
    profile = profile_for(cluster.node(), tmp_path_factory.mktemp("profiles") / "slurm")
    slurm = run_on_cluster(cluster, slurm_dir, profile)
    assert slurm.returncode == 0, slurm.output[-8000:]
    jobs = {job_id: cluster.job(job_id) for job_id in SUBMITTED.findall(slurm.output)}
    return {"local": (local_dir, local), "slurm": (slurm_dir, slurm), "jobs": jobs, "profile": profile}


def rule_of(job: dict[str, str]) -> str:
    # The plugin comments each job with `rule_<name>` or `rule_<name>_wildcards_<values>`.
    return re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", job["Comment"]).group(1)


def test_cluster_rules_went_through_sbatch_and_local_rules_did_not(runs):
    jobs = runs["jobs"]
    assert collections.Counter(rule_of(job) for job in jobs.values()) == CLUSTER_JOBS
    assert {job["JobState"] for job in jobs.values()} == {"COMPLETED"}
    _, local = runs["local"]
    _, slurm = runs["slurm"]

    def key(job):
        return job[0], tuple(sorted(job[1].items()))

    # The same jobs ran in both: the local rules on the submitting machine.
    assert sorted(map(key, slurm.jobs)) == sorted(map(key, local.jobs))


def test_profile_resources_reach_sbatch(runs):
    profile = yaml.safe_load((runs["profile"] / "config.yaml").read_text())
    for job in runs["jobs"].values():
        wanted = profile["set-resources"][rule_of(job)]
        assert job["MinMemoryNode"] == f"{wanted['mem_mb']}M", job
        hours, minutes = divmod(wanted["runtime"], 60)
        assert job["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", job
        assert job["OverSubscribe"] == ("NO" if rule_of(job) in EXCLUSIVE_RULES else "OK"), job


def test_serving_jobs_never_shared_the_node(runs):
    def span(job):
        return datetime.fromisoformat(job["StartTime"]), datetime.fromisoformat(job["EndTime"])

    jobs = runs["jobs"]
    for job_id, job in jobs.items():
        if rule_of(job) not in EXCLUSIVE_RULES:
            continue
        start, end = span(job)
        for other_id, other in jobs.items():
            other_start, other_end = span(other)
            overlap = other_id != job_id and other_start < end and start < other_end
            assert not overlap, (job_id, rule_of(job), span(job), other_id, rule_of(other), span(other))


def relative_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_results_have_the_local_layout_and_formats(runs):
    local_dir, _ = runs["local"]
    slurm_dir, _ = runs["slurm"]
    local_results, slurm_results = local_dir / "workload" / "profiling", slurm_dir / "workload" / "profiling"
    files = relative_files(slurm_results)
    assert files == relative_files(local_results)
    expected = {f"{model}/{name}" for model in PROFILED for name in (f"{model}.csv", "summary.csv", "coldstart.csv")}
    assert expected <= files
    for model in PROFILED:
        folder = slurm_results / model
        assert (folder / f"{model}.csv").read_text().splitlines()[0] == "batch_size, duration"
        assert (folder / "summary.csv").read_text().splitlines()[0].split(",") == SUMMARY_COLUMNS
        assert (folder / "coldstart.csv").read_text().splitlines()[0].split(",") == COLDSTART_COLUMNS
        for batch in (1, 2):
            latencies = [float(line) for line in (folder / f"{model}-b{batch}.csv").read_text().splitlines()]
            assert len(latencies) >= 2 and min(latencies) > 0
    for name in files:
        if name.endswith(".json") or name == "all":
            slurm_keys = set(json.loads((slurm_results / name).read_text()))
            assert slurm_keys == set(json.loads((local_results / name).read_text())), name
    assert (slurm_dir / "reports" / "report.md").is_file()
