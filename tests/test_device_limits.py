"""Device limits on real servers: real cgroups, a real CPU-bound model, a real memory cap.

The servers are ``serveprof measure`` subprocesses that launch the embedded server
under a ``--device``; the cgroups they create are checked and must be gone afterwards.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serveprof import settings
from serveprof.errors import ServeprofError
from serveprof.launch import cgroups
from serveprof.launch.device import memory_bytes, memory_problem
from serveprof.launch.limits import seen_limits
from tests.fixtures.embedded_server import REPO, server_env
from tests.workflow_runner import run_workflow, tiny_test_config, write_config

SERVER = json.dumps({"backend": "embedded", "startup_timeout_s": 180})
PROCEDURE = ["--requests", "12", "--max-seconds", "30", "--min-requests", "3"]
PROCEDURE += ["--warmup-requests", "2", "--warmup-max-seconds", "20", "--input", '{"kind": "random"}']
CPU_BATCH = 32  # about a billion multiply-adds a request: long enough to be CPU-bound, short enough to repeat
RUN_TIMEOUT_S = 400
MODEL = {
    "source": "keras",
    "type": "classification",
    "application": "MobileNetV2",
    "input_size": [32, 32],
    "weights": "random",
}


def _cgroup_capable() -> bool:
    try:
        return os.geteuid() == 0 and {"cpu", "memory"} <= set(cgroups.hierarchies())
    except OSError:
        return False


needs_cgroups = pytest.mark.skipif(not _cgroup_capable(), reason="needs root and the cpu and memory cgroup controllers")


def our_cgroups() -> set[Path]:
    """Every serveprof group left under the hierarchies this process uses."""
    found = set()
    for hierarchy in cgroups.hierarchies().values():
        for parent in {hierarchy.own, hierarchy.root}:
            found.update(parent.glob(f"{cgroups.PREFIX}*"))
    return found


# ------------------------------------------------------------------ the config


def device_config(devices) -> dict:
    return {"models": {"m": dict(MODEL)}, "batch_sizes": [1], "devices": devices}


@pytest.mark.parametrize(
    ("devices", "key", "said"),
    [
        ({"edge": {"cpus": 0}}, "devices.edge.cpus", "leave the server nothing to run on"),
        ({"edge": {"cpus": -1}}, "devices.edge.cpus", "leave the server nothing to run on"),
        ({"edge": {"memory": "2048"}}, "devices.edge.memory", "has no unit"),
        ({"edge": {"memory": 2048}}, "devices.edge.memory", "has no unit"),
        ({"edge": {"memory": "2G"}}, "devices.edge.memory", "binary and others as decimal"),
        ({"edge": {"memory": "2 parsecs"}}, "devices.edge.memory", "unknown unit"),
        ({"edge": {"memory": "12kB"}}, "devices.edge.memory", "less than 1 MiB"),
        ({"edge": {"cpu": 1}}, "devices.edge", "the device keys are cpus, memory"),
        ({"edge": {"intra_op_threads": 0}}, "devices.edge.intra_op_threads", "1 or more"),
        ({"../x": {"cpus": 1}}, "devices", "cannot be used as a directory name"),
        ({"host": {"cpus": 1}}, "devices.host", "give the limits a device name of their own"),
        ({}, "devices", "should be non-empty"),
    ],
)
def test_a_bad_device_is_refused_before_any_job_with_its_key_named(devices, key, said):
    with pytest.raises(ServeprofError) as caught:
        settings.load(device_config(devices))
    text = str(caught.value)
    assert f"{key}:" in text or f"{key} " in text, text
    assert said in text, text


def test_devices_resolve_their_threads_from_their_cpus_and_keep_the_config_order():
    loaded = settings.load(device_config({"edge": {"cpus": 1.5, "memory": "1.5GB"}, "host": {}, "pi": {"cpus": 4}}))
    devices = loaded.devices()
    assert list(devices) == ["edge", "host", "pi"]
    edge = devices["edge"]
    assert (edge.cpus, edge.memory_bytes, edge.intra_op_threads, edge.inter_op_threads) == (1.5, 1_500_000_000, 2, 2)
    assert devices["host"].constrained is False
    assert devices["pi"].intra_op_threads == 4
    # the default is the unconstrained host alone: the reference workload's layout
    default = settings.load({"models": {"m": dict(MODEL)}, "batch_sizes": [1]})
    assert list(default.devices()) == ["host"]
    assert default.model_hash("m") == default.model_hash("m", "host")


@pytest.mark.parametrize(("text", "size"), [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("1.5GB", 1_500_000_000)])
def test_memory_sizes_take_binary_and_decimal_units(text, size):
    assert memory_problem(text) is None
    assert memory_bytes(text) == size


def test_a_device_flag_is_checked_like_the_config():
    with pytest.raises(ServeprofError, match=r"devices\.edge\.memory"):
        settings.device_settings({"name": "edge", "memory": "1g"})
    assert settings.device_settings({}).constrained is False


# ------------------------------------------------------------------ real cgroups


@needs_cgroups
def test_a_cgroup_holds_its_limits_for_a_process_that_joins_it_and_is_removed():
    before = our_cgroups()
    group = cgroups.create({"cpu", "cpuset", "memory"})
    try:
        group.set_cpu_quota(0.5)
        group.set_cpuset([max(os.sched_getaffinity(0))])
        group.set_memory(256 << 20)
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            for name in group.procs_files():
                Path(name).write_text(str(sleeper.pid))
            seen = seen_limits(sleeper.pid)
            assert seen["cpu_quota_cpus"] == pytest.approx(0.5)
            assert seen["memory_limit_bytes"] == 256 << 20
            assert seen["cpus_allowed"] == str(max(os.sched_getaffinity(0)))
            assert group.pids() == {sleeper.pid}
        finally:
            sleeper.kill()
            sleeper.wait()
    finally:
        assert group.remove() == []
    assert our_cgroups() == before


# ------------------------------------------------------------------ real servers under limits


@pytest.fixture(scope="module")
def device_models(tmp_path_factory) -> dict[str, Path]:
    """The CPU-bound and the memory-hungry model (tests/fixtures/tiny_models.py), exported in one subprocess."""
    root = tmp_path_factory.mktemp("device_models")
    code = (
        "import sys; from tests.fixtures.tiny_models import export_cpu_bound_model, export_memory_hungry_model; "
        "export_cpu_bound_model(sys.argv[1]); export_memory_hungry_model(sys.argv[2])"
    )
    bases = {"cpu": root / "cpu", "hungry": root / "hungry"}
    subprocess.run(
        [sys.executable, "-c", code, str(bases["cpu"] / "1"), str(bases["hungry"] / "1")],
        check=True,
        cwd=REPO,
        env=server_env(),
        timeout=300,
        capture_output=True,
    )
    return bases


def measure_on(device: dict, base: Path, model: str, batch: int, out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    latencies, stats = out / f"{model}-b{batch}.csv", out / "stats" / f"b{batch}.json"
    command = [sys.executable, "-m", "serveprof", "measure", "--model", model, "--model-base-path", str(base)]
    command += ["--server", SERVER, "--batch-size", str(batch), *PROCEDURE, "--device", json.dumps(device)]
    command += ["--latencies", str(latencies), "--stats", str(stats)]
    done = subprocess.run(
        command, cwd=out.parent, env=server_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(stats.read_text())


@needs_cgroups
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="compares 1 CPU with 2")
def test_a_cpu_bound_model_is_slower_on_one_cpu_than_on_two(device_models, tmp_path, record_property):
    before = our_cgroups()
    means = {}
    for cpus in (1, 2):
        _, stats = measure_on(
            {"name": f"c{cpus}", "cpus": cpus}, device_models["cpu"], "cpu", CPU_BATCH, tmp_path / f"c{cpus}"
        )
        limits = stats["limits"]
        assert limits["mechanism"].startswith("cgroup v")
        assert limits["cpu_enforced"] is True
        assert limits["seen"]["cpu_quota_cpus"] == pytest.approx(cpus)
        assert len(cgroups._split_list(limits["seen"]["cpus_allowed"])) == cpus
        assert (limits["intra_op_threads"], limits["inter_op_threads"]) == (cpus, cpus)
        assert stats["device"]["name"] == f"c{cpus}"
        means[cpus] = stats["stats"]["mean_ms"]
    # The ratio is recorded, not asserted tightly: the machine is shared. One CPU doing twice the
    # work per request cannot beat two by much, so it must at least not be faster.
    record_property("one_cpu_over_two_cpus", means[1] / means[2])
    print(f"cpu-bound b{CPU_BATCH}: 1 CPU {means[1]:.1f} ms, 2 CPUs {means[2]:.1f} ms, ratio {means[1] / means[2]:.2f}")
    assert means[1] > means[2]
    assert our_cgroups() == before


# ------------------------------------------------------------------ the workflow, on a device


def test_a_devices_jobs_ask_the_scheduler_for_its_cpus_and_memory_and_calibration_uses_its_profile(tmp_path):
    """A dry run: what SLURM would be asked for, per device, and the calibrate job's flags."""
    config = tiny_test_config("http://127.0.0.1:9/tiny_zoo.tar.gz")
    config["devices"] = {"host": {}, "edge": {"cpus": 1.5, "memory": "2GiB"}}
    config["calibration"] = {"measured": str(REPO / "docs" / "examples" / "device_measurements.csv"),
                             "profiles": {"pi4": "edge"}}  # fmt: skip
    write_config(tmp_path, config)
    dry = run_workflow(tmp_path, "-n", "-p", "--cores", "4")
    assert dry.returncode == 0, dry.output[-4000:]
    jobs = re.split(r"\n(?=\[)", dry.output)
    edge = [job for job in jobs if "rule measure_batch:" in job and "device=devices/edge/" in job]
    host = [job for job in jobs if "rule measure_batch:" in job and "device=," in job]
    assert len(edge) == len(host) == 4  # 2 models x 2 batch sizes on each device
    # 1.5 CPUs run on 2 (a quota), plus a core for the client; 2 GiB is 2148 MB, plus 1000 for the client
    assert all("threads: 3" in job and "mem_mb=3148" in job for job in edge), edge[0]
    assert all("threads: 4" in job and "mem_mb=16000" in job for job in host), host[0]
    [calibrate] = [job for job in jobs if "rule calibrate:" in job]
    assert "--results workload/profiling " in calibrate
    assert "--device-results edge=workload/devices/edge/profiling --profile pi4=edge" in calibrate
    [ranking] = [job for job in jobs if "rule rank_devices:" in job]
    assert "--devices host=workload/profiling edge=workload/devices/edge/profiling" in ranking


@pytest.mark.slow
@needs_cgroups
def test_the_workflow_profiles_on_a_device_with_repeats_and_what_does_not_fit(device_models, tmp_path):
    """One real run on a constrained device, repeats 2: batch 1 fits, batch 8 (8 × 96 MiB a request) does not."""
    before = our_cgroups()
    work = tmp_path / "work"
    work.mkdir()
    hungry = {"source": "saved_model", "type": "classification", "path": str(device_models["hungry"])}
    config = {
        "models": {"hungry": hungry},
        "batch_sizes": [1, 8],
        "devices": {"small": {"cpus": 1, "memory": "700MiB"}},
        "measure": {"requests": 6, "max_seconds": 5, "min_requests": 2, "warmup_requests": 1,
                    "warmup_max_seconds": 5, "repeats": 2, "max_cv_pct": 1000},
        "server": {"backend": "embedded", "startup_timeout_s": 180},
        "plots": {"formats": ["png"], "dpi": 60},
    }  # fmt: skip
    write_config(work, config)
    dry = run_workflow(work, "-n", "--printshellcmds")
    assert dry.returncode == 0, dry.output[-4000:]
    run = run_workflow(work, timeout=900)
    assert run.returncode == 0, run.output[-6000:]
    # every serving job ran on the device, each repeat a job of its own, and nothing on the host
    assert {job["device"] for job in run.jobs_of("measure_batch")} == {"devices/small/"}
    assert sorted((job["batch"], job["repeat"]) for job in run.jobs_of("measure_batch")) == [
        ("1", "repeats/r1/"), ("1", "repeats/r2/"), ("8", "repeats/r1/"), ("8", "repeats/r2/")
    ]  # fmt: skip
    assert len(run.jobs_of("fold_repeats")) == 2
    assert not (work / "workload" / "profiling" / "hungry").exists()
    # the device's threads and memory are the jobs' (a core and 1000 MB for the client beside them)
    assert '--device \'{"cpus":1.0,' in dry.output or '--device \'{"cpus":1.0' in dry.output, dry.output[-3000:]
    assert "mem_mb=1735" in dry.output, dry.output[-3000:]

    folder = work / "workload" / "devices" / "small" / "profiling" / "hungry"
    durations = (folder / "hungry.csv").read_text().splitlines()
    assert durations[0] == "batch_size, duration"
    assert [line.split(", ")[0] for line in durations[1:]] == ["1"]  # batch 8 does not fit
    b1 = json.loads((folder / "stats" / "b1.json").read_text())
    repeats = b1["repeats"]
    assert repeats["count"] == 2 and [one["repeat"] for one in repeats["series"]] == [1, 2]
    assert repeats["cv_pct"] >= 0 and repeats["flagged"] is False
    pooled = (folder / "hungry-b1.csv").read_text().splitlines()
    assert len(pooled) == b1["stats"]["count"] == sum(one["count"] for one in repeats["series"])
    assert b1["limits"]["cpu_enforced"] is True and b1["limits"]["memory_enforced"] is True
    b8 = json.loads((folder / "stats" / "b8.json").read_text())
    assert b8["does_not_fit"]["memory"] == "700MiB" and b8["does_not_fit"]["repeats_killed"] == 2
    assert (folder / "hungry-b8.csv").read_text() == ""
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["device"] == "small"
    assert provenance["limits"]["memory_limit_bytes"] == 700 << 20
    assert [row["batch_size"] for row in provenance["does_not_fit"]] == [8]
    assert 0 < provenance["does_not_fit"][0]["peak_mb"] <= 701
    report = (work / "reports" / "devices" / "small" / "report.md").read_text()
    assert "does not fit in 700MiB" in report
    manifest = json.loads((work / "workload" / "profiling" / "all").read_text())
    assert str(folder.relative_to(work) / "hungry.csv") in manifest["profiled"]["hungry"]
    assert manifest["reports"] == ["reports/devices/small/report.md"]
    assert run_workflow(work, "-n").nothing_to_do
    assert our_cgroups() == before


@pytest.mark.parametrize("backend", ["docker", "apptainer"])
def test_containers_get_the_devices_limits_as_their_runtimes_flags_and_its_threads(tmp_path, backend):
    from serveprof.launch import ServerSpec
    from serveprof.launch.commands import build_command

    device = settings.device_settings({"name": "edge", "cpus": 1.5, "memory": "1GiB"})
    spec = ServerSpec.serving(settings.server_settings({}), "tiny", str(tmp_path), device=device)
    command = build_command(spec, backend, 8600, 8601, name="n")
    image = command.index("tensorflow/serving:latest" if backend == "docker" else "docker://tensorflow/serving:latest")
    flags = command[:image]
    assert flags[flags.index("--cpus") + 1] == "1.5"
    assert flags[flags.index("--memory") + 1] == flags[flags.index("--memory-swap") + 1] == str(1 << 30)
    # the thread pools follow the device's CPUs (rounded up), in the server's own flags
    assert {"--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=2"} <= set(command[image:])
    host = ServerSpec.serving(settings.server_settings({}), "tiny", str(tmp_path))
    assert "--cpus" not in build_command(host, backend, 8600, 8601, name="n")
