"""The resource sampler on real processes: known allocations, a spinning loop, a process tree."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from serveprof.measure.resources import ResourceSampler, detect_gpu_probe, parse_nvidia_smi

ALLOCATE_MB = 200

# Fills ALLOCATE_MB with bytes (b"x" * n writes every page, so all of it is resident),
# says "ready", then spins or sleeps until killed.
WORKER = """
import sys, time
block = b"x" * ({mb} * 1024 * 1024)
print("ready", flush=True)
if sys.argv[1] == "spin":
    while True:
        pass
time.sleep(600)
"""

# An idle parent whose child does the allocating: the sampler must follow the tree.
PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {worker!r}, "sleep"], stdout=subprocess.PIPE, text=True)
print(child.stdout.readline().strip(), flush=True)
child.wait()
"""


def start(code: str, *args: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"
    return process


@pytest.fixture
def processes():
    started: list[subprocess.Popen] = []
    yield started
    import psutil

    for process in started:
        try:
            tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for member in tree:
            member.kill()
        process.wait(timeout=10)


def sample(pid: int | None, seconds: float, interval: float = 0.1, gpu=None) -> dict:
    with ResourceSampler(pid, interval, gpu=gpu) as sampler:
        time.sleep(seconds)
    return sampler.summary()


class ScriptedGpu:
    """A GPU probe that answers from a script (None: an unreadable sample) and keeps what it answered."""

    def __init__(self, readings):
        self.readings = list(readings)
        self.answered: list = []

    def sample(self):
        reading = self.readings[len(self.answered) % len(self.readings)]
        self.answered.append(reading)
        return reading

    def names(self):
        return ["Scripted GPU"]


def test_spinning_process_with_known_allocation(processes):
    spinner = start(WORKER.format(mb=ALLOCATE_MB), "spin")
    processes.append(spinner)
    gpu = detect_gpu_probe()  # what the measure CLI uses: NVML, nvidia-smi, or None without a GPU
    summary = sample(spinner.pid, 1.5, gpu=gpu)
    assert summary["rss_peak_mb"] >= ALLOCATE_MB
    assert ALLOCATE_MB <= summary["rss_mean_mb"] <= summary["rss_peak_mb"]
    assert summary["cpu_util_pct"] > 5  # a busy loop; the machine is shared, so not a full 100
    assert summary["samples"] >= 5  # 1.5 s at 0.1 s, minus scheduling slack
    if gpu is None:
        assert summary["gpu_util_pct"] is None and summary["gpu_mem_mb"] is None
    else:  # a real device: readings in range (the driver itself holds some memory)
        assert 0 <= summary["gpu_util_pct"] <= 100 and summary["gpu_mem_mb"] > 0


def test_gpu_figures_are_the_mean_utilisation_and_peak_memory_of_the_readings(processes):
    sleeper = start(WORKER.format(mb=ALLOCATE_MB), "sleep")
    processes.append(sleeper)
    gpu = ScriptedGpu([(10.0, 1000.0), None, (40.0, 3000.0), (25.0, 2000.0)])
    summary = sample(sleeper.pid, 0.8, gpu=gpu)
    readings = [reading for reading in gpu.answered if reading is not None]
    assert len(gpu.answered) >= 4 and len(readings) >= 3  # every sample asks the GPU, the last one included
    assert summary["gpu_util_pct"] == pytest.approx(sum(u for u, _ in readings) / len(readings))
    assert summary["gpu_mem_mb"] == 3000.0
    assert summary["samples"] == len(gpu.answered), "one GPU reading per CPU/RSS sample"


def test_gpu_figures_without_a_process_to_sample():
    """A server in a remote container: no pid, but the GPU is the machine's and still read."""
    gpu = ScriptedGpu([(50.0, 512.0)])
    summary = sample(None, 0.3, gpu=gpu)
    assert (summary["gpu_util_pct"], summary["gpu_mem_mb"]) == (50.0, 512.0)
    assert summary["cpu_util_pct"] is None and summary["samples"] == 0


def test_sleeping_process_uses_no_cpu(processes):
    sleeper = start(WORKER.format(mb=ALLOCATE_MB), "sleep")
    processes.append(sleeper)
    summary = sample(sleeper.pid, 1.0)
    assert summary["rss_peak_mb"] >= ALLOCATE_MB
    assert summary["cpu_util_pct"] < 5


def test_children_are_counted(processes):
    parent = start(PARENT.format(worker=WORKER.format(mb=ALLOCATE_MB)))
    processes.append(parent)
    summary = sample(parent.pid, 0.8)
    # The parent is a bare interpreter (~10 MB); only the child holds the allocation.
    assert summary["rss_peak_mb"] >= ALLOCATE_MB


def test_process_that_exits_mid_sampling_keeps_its_readings(processes):
    sleeper = start(WORKER.format(mb=ALLOCATE_MB), "sleep")
    processes.append(sleeper)
    with ResourceSampler(sleeper.pid, 0.1) as sampler:
        time.sleep(0.5)
        sleeper.kill()
        sleeper.wait()
        time.sleep(0.3)
    summary = sampler.summary()
    assert summary["rss_peak_mb"] >= ALLOCATE_MB
    assert summary["samples"] >= 2


def test_unknown_pid_gives_null_figures():
    summary = sample(None, 0.3)
    assert summary["samples"] == 0
    assert all(
        summary[key] is None for key in ("cpu_util_pct", "rss_peak_mb", "rss_mean_mb", "gpu_util_pct", "gpu_mem_mb")
    )


def test_nvidia_smi_readings_are_parsed():
    # Two devices, as `nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits` prints them.
    assert parse_nvidia_smi("37, 1024\n63, 512\n") == (50.0, 1536.0)
    assert parse_nvidia_smi("[N/A], [N/A]\n") is None
    assert parse_nvidia_smi("") is None
