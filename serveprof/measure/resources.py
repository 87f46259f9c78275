"""What the server process costs while it is timed: CPU, resident memory and, if present, GPU.

A background thread samples the server's process tree every ``interval_s``:

- ``cpu_util_pct``: CPU time the server's processes used over the sampled wall time,
  in percent of one core (as ``top`` shows it: 200 means two cores busy);
- ``rss_peak_mb``/``rss_mean_mb``: resident set size summed over the tree, in MiB;
- ``gpu_util_pct``/``gpu_mem_mb``: device-wide GPU utilisation (mean) and memory used
  (peak, MiB) from NVML (``pynvml``) or ``nvidia-smi``; null when neither is present.
  Only the job's GPUs count (``CUDA_VISIBLE_DEVICES``, launch/gpus.py): NVML sees every
  GPU of the node, and with one serving job per GPU the others are other jobs'.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from typing import Protocol

import psutil

from serveprof.launch.gpus import visible_gpus

MIB = 1024 * 1024


class GpuProbe(Protocol):
    def sample(self) -> tuple[float, float] | None:
        """(utilisation %, memory used MiB) over all devices, or None if unreadable."""

    def names(self) -> list[str]: ...


def _nvml_handle(pynvml, device: str):
    """A device by NVML index, or by UUID (``GPU-...``, ``MIG-...``) as CUDA_VISIBLE_DEVICES may name it."""
    if device.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(device))
    return pynvml.nvmlDeviceGetHandleByUUID(device)


class NvmlProbe:
    def __init__(self, pynvml, devices: tuple[str, ...] | None = None):
        """``devices``: the job's GPUs (visible_gpus()); None: every GPU NVML sees."""
        self._nvml = pynvml
        if devices is None:
            devices = tuple(str(i) for i in range(pynvml.nvmlDeviceGetCount()))
        self._handles = [_nvml_handle(pynvml, device) for device in devices]

    def sample(self) -> tuple[float, float] | None:
        try:
            utils = [self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles]
            used = [self._nvml.nvmlDeviceGetMemoryInfo(h).used for h in self._handles]
        except self._nvml.NVMLError:
            return None
        return sum(utils) / len(utils), sum(used) / MIB

    def names(self) -> list[str]:
        names = [self._nvml.nvmlDeviceGetName(h) for h in self._handles]
        return [name.decode() if isinstance(name, bytes) else name for name in names]


def parse_nvidia_smi(text: str) -> tuple[float, float] | None:
    """Mean utilisation and summed memory from ``--query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits``."""
    utils, used = [], []
    for line in text.strip().splitlines():
        fields = [field.strip() for field in line.split(",")]
        try:
            utils.append(float(fields[0]))
            used.append(float(fields[1]))
        except (IndexError, ValueError):
            return None  # "[N/A]" or an error message: no reading rather than a wrong one
    if not utils:
        return None
    return sum(utils) / len(utils), sum(used)


class NvidiaSmiProbe:
    def __init__(self, executable: str, devices: tuple[str, ...] | None = None):
        """``devices``: the job's GPUs (indices or UUIDs, as ``nvidia-smi --id`` takes them); None: all."""
        self._exe = executable
        self._devices = devices

    def query_command(self, fields: str) -> list[str]:
        command = [self._exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"]
        return command + ([f"--id={','.join(self._devices)}"] if self._devices else [])

    def _query(self, fields: str) -> str | None:
        try:
            done = subprocess.run(
                self.query_command(fields),
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout

    def sample(self) -> tuple[float, float] | None:
        text = self._query("utilization.gpu,memory.used")
        return parse_nvidia_smi(text) if text else None

    def names(self) -> list[str]:
        text = self._query("name")
        return [line.strip() for line in text.splitlines() if line.strip()] if text else []


def detect_gpu_probe() -> GpuProbe | None:
    """NVML if ``pynvml`` (nvidia-ml-py) loads and sees a device, else ``nvidia-smi``, else None.

    Either reads only the job's GPUs; a job given none (``CUDA_VISIBLE_DEVICES=-1``) gets None.
    """
    devices = visible_gpus()
    if devices == ():
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() > 0:
            return NvmlProbe(pynvml, devices)
    except Exception:  # not installed, no driver, no device: all mean "use the fallback"
        pass
    executable = shutil.which("nvidia-smi")
    if executable:
        probe = NvidiaSmiProbe(executable, devices)
        if probe.names():
            return probe
    return None


def _process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


class ResourceSampler:
    """``with ResourceSampler(pid, 0.2) as sampler: ...``, then ``sampler.summary()``.

    With ``pid=None`` (a server serveprof did not start, or a container) the CPU and
    memory figures are null.
    """

    def __init__(self, pid: int | None, interval_s: float = 0.2, gpu: GpuProbe | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.pid = pid
        self.interval_s = interval_s
        self.gpu = gpu
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._baseline: dict[int, float] = {}  # pid -> CPU seconds when sampling began
        self._latest: dict[int, float] = {}  # pid -> CPU seconds when last seen
        self._rss: list[int] = []
        self._gpu: list[tuple[float, float]] = []
        self._started = self._last = 0.0

    def _cpu_and_rss(self) -> tuple[dict[int, float], int] | None:
        if self.pid is None:
            return None
        cpu, rss = {}, 0
        try:
            processes = _process_tree(self.pid)
        except psutil.NoSuchProcess:
            return None
        for process in processes:
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    # Not children_*: a reaped child's time would count twice (its own last reading too).
                    cpu[process.pid] = times.user + times.system
                    rss += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return cpu, rss

    def _take_sample(self) -> None:
        reading = self._cpu_and_rss()
        now = time.monotonic()
        if reading is not None:
            cpu, rss = reading
            self._latest.update(cpu)
            self._rss.append(rss)
            self._last = now
        if self.gpu is not None:
            gpu = self.gpu.sample()
            if gpu is not None:
                self._gpu.append(gpu)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._take_sample()

    def __enter__(self) -> ResourceSampler:
        reading = self._cpu_and_rss()
        self._started = self._last = time.monotonic()
        if reading is not None:
            self._baseline = dict(reading[0])
            self._latest = dict(reading[0])
        self._thread = threading.Thread(target=self._run, name="serveprof-resources", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._take_sample()  # the last stretch, shorter than one interval, counts too

    def summary(self) -> dict:
        wall = self._last - self._started
        cpu_util = None
        if self._rss and wall > 0:
            # A process born during the phase counts from zero; one that exited keeps its last reading.
            used = sum(seconds - self._baseline.get(pid, 0.0) for pid, seconds in self._latest.items())
            cpu_util = 100.0 * used / wall
        return {
            "cpu_util_pct": cpu_util,
            "rss_peak_mb": max(self._rss) / MIB if self._rss else None,
            "rss_mean_mb": sum(self._rss) / len(self._rss) / MIB if self._rss else None,
            "gpu_util_pct": sum(u for u, _ in self._gpu) / len(self._gpu) if self._gpu else None,
            "gpu_mem_mb": max(m for _, m in self._gpu) if self._gpu else None,
            "samples": len(self._rss),
            "interval_s": self.interval_s,
        }
