"""``launch(spec)``: start a backend, wait until the model is AVAILABLE, always tear down.

Teardown runs on leaving the ``with`` block for any reason (normal exit, exception,
Ctrl-C, and SIGTERM once ``terminate_on_sigterm`` turns it into an exception), from
an ``atexit`` hook if a RunningServer escaped its block, and by the kernel
(PR_SET_PDEATHSIG) if the launcher is killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import serveprof.launch.process as processes
from serveprof.errors import ServeprofError
from serveprof.launch.commands import build_command, container_name, executable, resolve_backend, server_environment
from serveprof.launch.device import memory_text
from serveprof.launch.limits import CONTAINER_BACKENDS, Confinement
from serveprof.launch.options import BATCHING_FILE, option_files, written
from serveprof.launch.ports import free_ports, lost_port_race
from serveprof.launch.probes import identify
from serveprof.launch.spec import ServerSpec
from serveprof.server.flags import response_serialization

log = logging.getLogger("serveprof.launch")

PORT_ATTEMPTS = 3
POLL_INTERVAL_S = 0.02  # the load time's resolution
POLL_TIMEOUT_S = 1.0
DIED_WITHIN_S = 0.2  # check_alive: how long a failing request's server may take to be seen dead
END_EXIT_WAIT_S = 3.0  # a server that gave up loading exits by itself; its last log lines say why
TAIL_LINES = 40
# The status channel retries a refused connection within milliseconds instead of
# gRPC's default back-off (1 s, growing), which would blur the measured load time.
FAST_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 20),
    ("grpc.min_reconnect_backoff_ms", 20),
    ("grpc.max_reconnect_backoff_ms", 100),
)


class ServerDied(ServeprofError):
    """The server process exited while it was being used."""


class DoesNotFit(ServerDied):
    """The server was killed by its device's memory cap: the model does not fit in that memory.

    ``during`` says what it was doing (loading the model, a request at a batch size);
    ``peak_bytes`` is the most memory its cgroup held (None where it cannot be read).
    """

    def __init__(
        self,
        problem: str,
        fix: str,
        *,
        memory: str,
        memory_bytes: int,
        peak_bytes: int | None,
        during: str,
        limits: dict | None = None,
        backend: str | None = None,
    ):
        super().__init__(problem, fix)
        self.memory, self.memory_bytes, self.peak_bytes, self.during = memory, memory_bytes, peak_bytes, during
        self.backend = backend
        self.limits = limits  # what the server ran under (launch/limits.py), as far as it was read back

    def record(self) -> dict:
        """The stats JSON's ``does_not_fit`` block."""
        return {
            "memory": self.memory,
            "memory_bytes": self.memory_bytes,
            "peak_mb": None if self.peak_bytes is None else self.peak_bytes / (1024 * 1024),
            "during": self.during,
        }


class _PortTaken(Exception):
    pass


def read_tail(path: str, lines: int = TAIL_LINES, max_bytes: int = 256 * 1024) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - max_bytes))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _quoted(tail: str) -> str:
    return (
        "\n".join(f"    | {line}" for line in tail.splitlines()) if tail.strip() else "    | (the server log is empty)"
    )


class RunningServer:
    """One started server; ``launch`` hands it out once the model is AVAILABLE."""

    def __init__(
        self,
        spec: ServerSpec,
        backend: str,
        command: list[str],
        process: subprocess.Popen,
        grpc_port: int,
        rest_port: int,
        log_path: str,
        started_ns: int,
        container: str | None,
        confinement: Confinement | None = None,
    ):
        self.spec, self.backend, self.command, self.process = spec, backend, command, process
        self.confinement = confinement or Confinement(spec.device, backend)
        self.grpc_port, self.rest_port, self.log_path = grpc_port, rest_port, log_path
        self.started_ns = started_ns
        self.available_ns: int | None = None
        self.container = container
        self.container_pid: int | None = None  # docker: the server's host pid, once known (launch sets it)
        # How Predict answers are serialised is part of what a measurement times (the flag is TF Serving's own).
        self.info = {
            "backend": backend,
            "version": None,
            "command": list(command),
            "serialization": response_serialization(command),
        }
        self._stopped = False

    @property
    def grpc_target(self) -> str:
        return f"{_url_host(self.spec.host)}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{_url_host(self.spec.host)}:{self.rest_port}"

    @property
    def metrics_url(self) -> str | None:
        """TF Serving's Prometheus page, when the spec asked for one (``metrics_path``)."""
        return f"{self.rest_url}{self.spec.metrics_path}" if self.spec.metrics_path else None

    @property
    def pid(self) -> int | None:
        """The process whose CPU and memory are the server's (None when it cannot be seen from here)."""
        if self.backend in ("embedded", "tfserving"):
            return self.process.pid
        if self.backend == "docker":  # the Docker daemon's grandchild, found through `docker inspect`
            return self.container_pid
        if self.backend == "apptainer":  # the server is a descendant of apptainer's starter
            import psutil

            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(self.process.pid).children(recursive=True):
                    if child.name() == "tensorflow_model_server":
                        return child.pid
        return None

    def log_tail(self, lines: int = TAIL_LINES) -> str:
        return read_tail(self.log_path, lines)

    def limits(self) -> dict | None:
        """What the server ran under (the stats JSON's ``limits``): read back, with the memory peak and
        CPU throttling so far; None on the unconstrained host."""
        self.confinement.snapshot()
        return self.confinement.record()

    def does_not_fit(self, during: str) -> DoesNotFit | None:
        """A DoesNotFit if the server has exited because its memory cap killed it, else None.

        With a cgroup of ours the kernel's OOM-kill count says so. A container runtime's
        cgroup is gone with the container, so there a SIGKILL under a memory cap is read as
        the cap's OOM killer, the one thing that kills a server so while serveprof does not.
        """
        device, confinement = self.spec.device, self.confinement
        code = self.process.poll()
        if code is None or device.memory is None:
            return None
        killed = confinement.oom_killed()
        inferred = (
            killed is None and self.backend in CONTAINER_BACKENDS and code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        )
        if not killed and not inferred:
            return None
        peak = confinement.memory_peak()
        seen = f"; its cgroup held at most {memory_text(peak)}" if peak else ""
        how = (
            "was killed by the memory cap"
            if killed
            else "was killed with SIGKILL under the memory cap (its OOM killer)"
        )
        return DoesNotFit(
            f"the {self.backend} server for model {self.spec.model_name!r} does not fit in {device.memory} on device "
            f"{device.name!r}: it {how} while {during}{seen}; the end of its log ({self.log_path}):\n{_quoted(self.log_tail())}",
            f"give device {device.name!r} more memory, or take a smaller batch size; the result records that it does not fit",
            memory=device.memory,
            memory_bytes=device.memory_bytes,
            peak_bytes=peak,
            during=during,
            limits={**(confinement.record(oom_killed=True) or {}), "memory_peak_bytes": peak},
            backend=self.backend,
        )

    def check_alive(self, during: str = "in use") -> None:
        """Raise ServerDied, quoting the log, if the server has exited (DoesNotFit if its memory cap killed it)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=DIED_WITHIN_S)
        if self.process.returncode is None:
            return
        unfit = self.does_not_fit(during)
        if unfit is not None:
            raise unfit
        raise ServerDied(
            f"the {self.backend} server for model {self.spec.model_name!r} (pid {self.process.pid}) exited with "
            f"{_exit_text(self.process.returncode)} while in use; the end of its log ({self.log_path}):\n"
            f"{_quoted(self.log_tail())}",
            "read the log above: a killed server (signal 9) is often the out-of-memory killer; try a smaller batch "
            "size or a machine with more memory",
        )

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            processes.stop(self.process)
        finally:
            _live.discard(self)
            try:
                if self.container:
                    _remove_container(self.spec.docker_path, self.container)
            finally:
                self.confinement.release()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {-code} ({signal.Signals(-code).name})"
    return f"status {code}"


def _remove_container(docker: str, name: str) -> None:
    # `docker run --rm` removes a container that stops; this covers one whose client was killed first.
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)


_live: set[RunningServer] = set()
_live_lock = threading.Lock()


@atexit.register
def _stop_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live)
    for server in leftovers:
        with contextlib.suppress(Exception):
            server.stop()


def _check_runtime(spec: ServerSpec, backend: str) -> None:
    if not Path(spec.model_base_path).is_dir():
        raise ServeprofError(
            f"model base path {spec.model_base_path} is not a directory",
            "export the model first (serveprof export), or pass the directory that holds its "
            "numeric version directories (1/, 2/, ...)",
        )
    if backend == "docker":
        executable(
            spec.docker_path,
            "the docker client",
            "install Docker (with a running engine) or set server.docker_path; or choose another server.backend",
        )
    if backend == "apptainer":
        executable(
            spec.apptainer_path,
            "apptainer",
            "load Apptainer (e.g. `module load apptainer`) or set server.apptainer_path; or choose another "
            "server.backend",
        )


@contextlib.contextmanager
def launch(spec: ServerSpec) -> Iterator[RunningServer]:
    """Start the server ``spec`` describes; yield it once the model is AVAILABLE; always stop it."""
    backend = resolve_backend(spec)
    _check_runtime(spec, backend)
    files = option_files(spec)
    own_log = spec.log_path is None
    log_path = spec.log_path
    if log_path is None:
        descriptor, log_path = tempfile.mkstemp(prefix="serveprof-server-", suffix=".log")
        os.close(descriptor)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    server = None
    try:
        options_dir = stack.enter_context(written(files))
        for attempt in range(1, PORT_ATTEMPTS + 1):
            server = _start(spec, backend, log_path, options_dir)
            try:
                _wait_until_available(server)
                break
            except _PortTaken:
                server.stop()
                if attempt == PORT_ATTEMPTS:
                    raise _failure(
                        server,
                        "kept losing its ports to other programs",
                        "retry; if it persists, check for a program grabbing free ports",
                    ) from None
                log.warning(
                    "server ports %d/%d were taken before the server bound them; retrying with new ports",
                    server.grpc_port,
                    server.rest_port,
                )
        log.info(
            "%s server for %r AVAILABLE after %.0f ms",
            backend,
            spec.model_name,
            (server.available_ns - server.started_ns) / 1e6,
        )
        _identify(server)
        server.info["batching_parameters"] = files.get(BATCHING_FILE)  # the file as the server read it
        yield server
    except ServeprofError:
        own_log = False  # the error names the log and quotes only its tail: keep it
        raise
    finally:
        if server is not None:
            server.stop()
        stack.close()  # the option files go once the server has stopped reading them
        if own_log:
            with contextlib.suppress(OSError):
                os.unlink(log_path)


def _start(spec: ServerSpec, backend: str, log_path: str, options_dir: str | None) -> RunningServer:
    grpc_port, rest_port = free_ports(spec.host)
    container = container_name(spec) if backend == "docker" else None
    command = build_command(spec, backend, grpc_port, rest_port, container, options_dir)
    environment = server_environment(spec, backend)
    # A container runtime gets SIGTERM so it can clean up its container; a plain server has nothing to save.
    death_signal = signal.SIGKILL if backend in ("embedded", "tfserving") else signal.SIGTERM
    confinement = Confinement.prepare(spec.device, backend)
    try:
        with open(log_path, "wb") as log_file:
            with _live_lock:  # registered before it can be orphaned by an exception
                started_ns = time.monotonic_ns()
                process = processes.spawn(
                    command, log_file, death_signal, env=environment, confine=confinement.preexec()
                )
                server = RunningServer(
                    spec, backend, command, process, grpc_port, rest_port, log_path, started_ns, container, confinement
                )
                _live.add(server)
    except BaseException:
        confinement.release()
        raise
    log.info("started %s server (pid %d): %s", backend, process.pid, " ".join(command))
    return server


def _wait_until_available(server: RunningServer) -> None:
    from serveprof.client import GrpcClient, ServingRequestError

    spec = server.spec
    deadline_ns = server.started_ns + int(spec.startup_timeout_s * 1e9)
    with GrpcClient(server.grpc_target, spec.model_name, options=FAST_RECONNECT) as client:
        while True:
            if server.process.poll() is not None:
                unfit = server.does_not_fit("loading the model")
                if unfit is not None:
                    server.stop()
                    raise unfit
                if lost_port_race(server.log_tail(lines=200)):
                    raise _PortTaken()
                raise _failure(
                    server,
                    f"failed to load the model: it exited with "
                    f"{_exit_text(server.process.returncode)} before the model was AVAILABLE",
                    _load_fix(spec),
                )
            remaining_s = (deadline_ns - time.monotonic_ns()) / 1e9
            if remaining_s <= 0:
                raise _failure(
                    server,
                    f"did not report the model AVAILABLE within server.startup_timeout_s = "
                    f"{spec.startup_timeout_s:g} s",
                    f"raise server.startup_timeout_s (large models on a busy CPU load slowly), or read "
                    f"the log above for a server stuck or failing; {_load_fix(spec)}",
                )
            try:
                state = client.model_status(timeout_s=min(POLL_TIMEOUT_S, remaining_s))
            except ServingRequestError:
                state = None  # not listening yet, or the model not registered yet
            if state == "AVAILABLE":
                server.available_ns = time.monotonic_ns()
                # TF Serving keeps running without REST when its REST port was taken.
                if lost_port_race(server.log_tail(lines=200)):
                    raise _PortTaken()
                return
            if state == "END":
                with contextlib.suppress(subprocess.TimeoutExpired):  # so its log holds the reason
                    server.process.wait(timeout=END_EXIT_WAIT_S)
                raise _failure(server, "failed to load the model: it reported the model's state END", _load_fix(spec))
            time.sleep(POLL_INTERVAL_S)


def _identify(server: RunningServer) -> None:
    """Provenance (versions, image digest, GPU) and a container's pid; a GPU asked for but not seen is warned about."""
    facts = identify(
        server.spec, server.backend, server.command, server.container, read_tail(server.log_path, 2000, 1 << 20)
    )
    server.info.update(facts.info)
    server.container_pid = facts.host_pid
    server.confinement.verify(server.pid)
    limits = server.confinement.record()
    if limits is not None:
        server.info["limits"] = limits
        log.info("%s server for %r runs under: %s", server.backend, server.spec.model_name, limits_text(limits))
    log.info("%s server for %r: %s", server.backend, server.spec.model_name, server.info["version"])
    for note in facts.info["notes"]:
        if note != facts.gpu_warning:
            log.info("provenance: %s", note)
    if facts.gpu_warning:
        log.warning("WARNING: %s", facts.gpu_warning)


def limits_text(limits: dict) -> str:
    """One line: what the server runs under, as read back."""
    seen = limits.get("seen") or {}
    parts = [f"device {limits['device']} ({limits['mechanism']})"]
    if limits.get("cpus") is not None:
        quota = seen.get("cpu_quota_cpus")
        parts.append(
            f"CPUs {seen.get('cpus_allowed')}" + (f", quota {quota:g} CPUs" if quota is not None else ", no quota")
        )
    if limits.get("memory") is not None:
        cap = seen.get("memory_limit_bytes")
        parts.append(f"memory cap {memory_text(cap)}" if cap else "memory not capped")
    return "; ".join(parts + list(limits.get("notes") or []))


def _load_fix(spec: ServerSpec) -> str:
    return (
        f"check that {spec.model_base_path} holds a numeric version directory (e.g. 1/) with a SavedModel "
        "(saved_model.pb, variables/), and that server.extra_flags are flags the server knows"
    )


def _failure(server: RunningServer, what: str, fix: str) -> ServeprofError:
    server.stop()  # before quoting the log, so it holds the server's last words
    return ServeprofError(
        f"the {server.backend} server for model {server.spec.model_name!r} {what}; the end of its log "
        f"({server.log_path}):\n{_quoted(server.log_tail())}\n  command: {' '.join(server.command)}",
        fix,
    )
