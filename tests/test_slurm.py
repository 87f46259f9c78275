"""The workflow through the SLURM profile, on a real one-node SLURM cluster.

.ci/slurm/start-cluster.sh installs Debian's SLURM and munge when they are missing and
starts munged, slurmctld and slurmd on this machine; the session fixture always stops
them again, also when the start itself fails or times out. The tiny test config then
runs twice, in two scratch directories: once locally (the reference) and once as users
run it on a cluster, `snakemake --profile profiles/slurm ...`, with the repository's
own profiles/slurm and the workflow profile profiles/default that Snakemake loads on
top of it. The test reads the jobs back from slurmctld and compares the two result
trees.

The command line adds only what this test cluster needs and a real one does not:
`--slurm-status-command squeue --slurm-no-account` (no accounting database) and a
shorter first status check. Nothing of the profile is rewritten: the cluster's one
node is declared large enough for the profile's requests (see start-cluster.sh).

Needs root (packages, daemons, and sbatch jobs that run as root). Skipped when not
root, when the machine has a SLURM configuration of its own, or when SLURM is missing
and cannot be installed (start-cluster.sh exits 77: no apt-get, or the packages cannot
be fetched). A cluster that was installed but misbehaves is a failure, never a skip.
With SERVEPROF_SLURM_REQUIRED=1 in the environment every one of those skips is a
failure too, for CI that must run this test.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import psutil
import pytest
import yaml

from serveprof.measure import result_files
from tests.workflow_runner import BIN, REPO, Run, parse_jobs, run_workflow, tiny_test_config, write_config

START = REPO / ".ci" / "slurm" / "start-cluster.sh"
STOP = REPO / ".ci" / "slurm" / "stop-cluster.sh"
PROFILE_DIR = REPO / "profiles" / "slurm"
PROFILE = PROFILE_DIR / "config.yaml"
CLUSTER_NAME = "serveprof-ci"  # ClusterName in the slurm.conf start-cluster.sh writes
SKIP_EXIT = 77  # start-cluster.sh: SLURM is missing and cannot be installed here
START_TIMEOUT_S = 900  # a fresh machine downloads and installs the packages first
RUN_TIMEOUT_S = 2000
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
    """Why the cluster cannot even be tried here. Whether SLURM can be installed is
    only known by trying: start-cluster.sh says so with its exit status."""
    if os.geteuid() != 0:
        return "needs root: installs SLURM with apt-get and runs slurmctld, slurmd and munged (run as root, as CI does)"
    default_conf = Path("/etc/slurm/slurm.conf")
    if default_conf.exists() and not default_conf.is_symlink():
        return "this machine has its own SLURM configuration in /etc/slurm; the test cluster would replace it"
    return None


def skip_or_fail(reason: str):
    if os.environ.get("SERVEPROF_SLURM_REQUIRED") == "1":
        pytest.fail(f"SERVEPROF_SLURM_REQUIRED=1, but the SLURM test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(2400)]


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
        result = subprocess.run(["scontrol", *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"scontrol {' '.join(args)} failed: {result.stderr.strip()}"  # e.g. a purged job
        return result.stdout

    def node(self) -> dict[str, str]:
        return fields(self.scontrol("show", "node", "-o"))

    def min_job_age_s(self) -> int:
        found = re.search(r"^MinJobAge\s*=\s*(\d+)", self.scontrol("show", "config"), re.MULTILINE)
        assert found, "scontrol show config printed no MinJobAge"
        return int(found.group(1))

    def job(self, job_id: str) -> dict[str, str]:
        # A purged record would fail here; the cluster fixture checks MinJobAge first.
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


def run_script(script: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a .ci/slurm script in a process group of its own; returncode None if it timed out.

    On a timeout the whole group gets SIGTERM (start-cluster.sh then removes its
    temporary policy-rc.d), then SIGKILL, so no apt-get or dpkg is left running. The
    daemons it started have left the group and are stop-cluster.sh's to stop.
    """
    process = subprocess.Popen(
        ["bash", str(script)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                stdout, stderr = process.communicate(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
        return subprocess.CompletedProcess(process.args, None, stdout, f"{stderr}\n(timed out after {timeout}s)")


@pytest.fixture(scope="session")
def cluster():
    if reason := skip_reason():
        skip_or_fail(reason)
    pids: dict[str, int] = {}
    try:
        # Inside the try: stop-cluster.sh runs whatever happens to the start,
        # a timeout included.
        started = run_script(START, START_TIMEOUT_S)
        if started.returncode == SKIP_EXIT:
            skip_or_fail(f"SLURM is not installed and cannot be installed here: {started.stderr.strip()[-2000:]}")
        assert started.returncode == 0, f"start-cluster.sh failed:\n{started.stdout}\n{started.stderr}"
        conf = Path(started.stdout.strip().splitlines()[-1].removeprefix("SLURM_CONF="))
        handle = Cluster(conf)
        pids.update({name: int(path.read_text()) for name, path in handle.pid_files().items()})
        # Every job is read back with scontrol after the workflow ends: slurmctld must
        # not have purged any of them by then.
        assert handle.min_job_age_s() > RUN_TIMEOUT_S, "MinJobAge in start-cluster.sh is shorter than a test run"
        yield handle
    finally:
        stopped = run_script(STOP, 300)
        again = run_script(STOP, 300)
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


def run_on_cluster(cluster: Cluster, workdir: Path) -> Run:
    """The command docs/hpc.md gives users, plus only what the test cluster needs."""
    env = dict(cluster.env, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--profile", str(PROFILE_DIR),
        # Only because the test cluster has no accounting database (see the docstring).
        "--slurm-status-command", "squeue", "--slurm-no-account",
        # Only to save time: the first status check after 2 s instead of 40 s.
        "--slurm-init-seconds-before-status-checks", "2",
        "--", "workload/profiling/all",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL
    )
    output = result.stdout + result.stderr
    return Run(result.returncode, output, parse_jobs(output))


@pytest.fixture(scope="session")
def runs(cluster, tarball, tmp_path_factory):
    local_dir = prepare(tmp_path_factory.mktemp("local"), tarball)
    slurm_dir = prepare(tmp_path_factory.mktemp("slurm"), tarball)
    # The reference run goes alongside the cluster's: the SLURM run spends most of its time
    # waiting on submissions and status checks, and nothing here compares timings.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        reference = pool.submit(run_workflow, local_dir)
        slurm = run_on_cluster(cluster, slurm_dir)
        local = reference.result()
    assert local.returncode == 0, local.output[-6000:]
    assert slurm.returncode == 0, slurm.output[-8000:]
    jobs = {job_id: cluster.job(job_id) for job_id in SUBMITTED.findall(slurm.output)}
    return {"local": (local_dir, local), "slurm": (slurm_dir, slurm), "jobs": jobs, "node": cluster.node()}


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


def declared_resources(output: str) -> dict[str, dict[str, str]]:
    """Each rule's resources as Snakemake printed them for its jobs (``resources: mem_mb=16000, ...``)."""
    declared: dict[str, dict[str, str]] = {}
    rule = None
    for line in output.splitlines():
        header = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line)
        if header:
            rule = header.group(1)
        found = re.match(r"^\s+resources: (.*)$", line)
        if found and rule:
            declared.setdefault(rule, dict(part.split("=", 1) for part in found.group(1).split(", ")))
    return declared


def test_the_rules_resources_reach_sbatch(runs):
    """What a rule declares (rules/*.smk) is what SLURM was asked for; the profile repeats none of it."""
    profile = yaml.safe_load(PROFILE.read_text())
    assert all(
        set(wanted) <= {"slurm_extra", "gpu_model", "slurm_partition"} for wanted in profile["set-resources"].values()
    )
    _, slurm = runs["slurm"]
    declared = declared_resources(slurm.output)
    for job in runs["jobs"].values():
        wanted = declared[rule_of(job)]
        assert job["MinMemoryNode"] == f"{wanted['mem_mb']}M", (job, wanted)
        hours, minutes = divmod(int(wanted["runtime"]), 60)
        assert job["TimeLimit"] == f"{hours:02d}:{minutes:02d}:00", (job, wanted)
        assert job["OverSubscribe"] == ("NO" if rule_of(job) in EXCLUSIVE_RULES else "OK"), job


def span(job: dict[str, str], start: str = "StartTime") -> tuple[datetime, datetime]:
    return datetime.fromisoformat(job[start]), datetime.fromisoformat(job["EndTime"])


def serving_jobs(runs) -> dict[str, dict[str, str]]:
    return {job_id: job for job_id, job in runs["jobs"].items() if rule_of(job) in EXCLUSIVE_RULES}


def test_serving_jobs_were_queued_together_not_one_after_another(runs):
    """The invocation users get does not hold serving jobs back: Snakemake submits
    them as soon as their model is exported, and SLURM queues them.

    profiles/default's `resources: serving_slot=1` (one slot per machine) applies on the
    cluster too; profiles/slurm scopes the slot per job (`set-resource-scopes`). Without
    that, Snakemake would submit each serving job only after the previous one ended.
    """
    jobs = serving_jobs(runs)

    def queued_while_other_ran(job, other):
        queued_from, queued_to = span(job, "SubmitTime")
        ran_from, ran_to = span(other)
        return queued_from < ran_to and ran_from < queued_to

    together = [
        (job_id, other_id)
        for job_id, job in jobs.items()
        for other_id, other in jobs.items()
        if job_id != other_id and queued_while_other_ran(job, other)
    ]
    times = {job_id: (job["SubmitTime"], job["StartTime"], job["EndTime"]) for job_id, job in jobs.items()}
    assert together, f"each serving job was submitted only after the one before it ended (submit, start, end): {times}"


def test_serving_jobs_never_shared_the_node(runs):
    jobs = runs["jobs"]
    # The node could have run two of them at once by CPUs and memory, so it is
    # --exclusive, not the node's size, that kept them apart.
    node = runs["node"]
    for job in serving_jobs(runs).values():
        assert 2 * int(job["CPUs/Task"]) <= int(node["CPUTot"]), (job["CPUs/Task"], node["CPUTot"])
        assert 2 * int(job["MinMemoryNode"].removesuffix("M")) <= int(node["RealMemory"]), (
            job["MinMemoryNode"],
            node["RealMemory"],
        )
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
        # The documented columns come first, as before; later columns are only ever appended.
        summary = (folder / "summary.csv").read_text().splitlines()[0].split(",")
        coldstart = (folder / "coldstart.csv").read_text().splitlines()[0].split(",")
        assert summary[: len(SUMMARY_COLUMNS)] == SUMMARY_COLUMNS and summary == list(result_files.SUMMARY_COLUMNS)
        assert coldstart[: len(COLDSTART_COLUMNS)] == COLDSTART_COLUMNS
        assert coldstart == list(result_files.COLDSTART_COLUMNS)
        for batch in (1, 2):
            latencies = [float(line) for line in (folder / f"{model}-b{batch}.csv").read_text().splitlines()]
            assert len(latencies) >= 2 and min(latencies) > 0
    for name in files:
        if name.endswith(".json") or name == "all":
            slurm_keys = set(json.loads((slurm_results / name).read_text()))
            assert slurm_keys == set(json.loads((local_results / name).read_text())), name
    assert (slurm_dir / "reports" / "report.md").is_file()
