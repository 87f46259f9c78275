"""What served, found out once the model is AVAILABLE: versions, the image and its digest,
a container's host pid, and whether the server's TensorFlow sees a GPU.

Every probe is best effort: one that cannot run, times out or prints something
unexpected leaves its field null and adds a note saying why; it never fails the run.
The command lines come from serveprof/launch/commands.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from serveprof.launch.commands import (
    apptainer_image,
    docker_container_inspect_command,
    docker_image_inspect_command,
    embedded_gpu_probe_command,
    image_reference,
    is_image_file,
    parse_version_text,
    server_environment,
    split_reference,
    version_command,
    version_label,
)
from serveprof.launch.spec import ServerSpec

PROBE_TIMEOUT_S = 60
GPU_PROBE_TIMEOUT_S = 300  # importing TensorFlow takes seconds, minutes on a crowded node
SERVER_BINARY = "tensorflow_model_server"
# TensorFlow's line when it puts a GPU to use (TF 2.x; "Created TensorFlow device (...)" in older releases).
GPU_DEVICE_CREATED = re.compile(r"Created (?:TensorFlow )?device \(?/job:\S*device:GPU:\d+")


@dataclass
class ServerFacts:
    """``info`` goes into RunningServer.info (and so into every stats JSON); ``host_pid`` is a container's;
    ``gpu_warning`` says why a GPU that was asked for is not (or not known to be) in use."""

    info: dict = field(default_factory=dict)
    host_pid: int | None = None
    gpu_warning: str | None = None


def run_probe(
    command: list[str], timeout_s: float = PROBE_TIMEOUT_S, env: dict[str, str] | None = None, with_stderr: bool = False
) -> tuple[str | None, str | None]:
    """(output, None), or (None, a note saying why there is none)."""
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, env=env
        )
    except OSError as error:
        return None, f"`{shown}` could not run: {error}"
    except subprocess.TimeoutExpired:
        return None, f"`{shown}` did not finish within {timeout_s:g} s"
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return None, f"`{shown}` exited with status {done.returncode}" + (f": {said[-1][:300]}" if said else "")
    return (done.stdout + done.stderr if with_stderr else done.stdout), None


_digests: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str) -> str:
    """``sha256:<hex>`` of a file, remembered per (path, size, mtime): a .sif is gigabytes."""
    status = Path(path).stat()
    key = (path, status.st_size, status.st_mtime_ns)
    if key not in _digests:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = f"sha256:{digest.hexdigest()}"
    return _digests[key]


def local_server_pid(pid: int) -> int | None:
    """The tensorflow_model_server at or below ``pid``, if that pid is on this host (None otherwise)."""
    try:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            if process.name() == SERVER_BINARY:
                return process.pid
    except psutil.Error:
        pass
    return None


def docker_facts(spec: ServerSpec, container: str, notes: list[str]) -> tuple[int | None, str | None, str | None]:
    """(host pid of the server, image id, registry digest) of a running container."""
    text, note = run_probe(docker_container_inspect_command(spec, container))
    fields = (text or "").split()
    if len(fields) != 2 or not fields[0].isdigit():
        notes.append(f"container inspect: {note or f'unexpected output {text!r}'}")
        return None, None, None
    pid, image_id = int(fields[0]), fields[1]
    host_pid = local_server_pid(pid) if pid > 0 else None
    if host_pid is None:
        notes.append(
            f"container pid {pid} is not a {SERVER_BINARY} on this host (a remote Docker daemon, or one in "
            "a VM): the server's CPU and memory are not sampled"
        )
    text, note = run_probe(docker_image_inspect_command(spec, image_id))
    try:
        digests = (json.loads(text) or []) if text is not None else None  # "null" for a local image
    except ValueError:
        digests, note = None, f"unexpected output {text!r}"
    if not isinstance(digests, list):
        notes.append(f"image inspect: {note or f'unexpected output {text!r}'}")
        return host_pid, image_id, None
    repository = split_reference(image_reference(spec))[0]
    matching = [entry for entry in digests if str(entry).split("@")[0] == repository]
    digest = (matching or digests or [None])[0]
    if digest is None:
        notes.append(f"image {image_id} has no registry digest (built or loaded locally); its id is recorded")
    return host_pid, image_id, digest


def gpu_status(spec: ServerSpec, backend: str, log_text: str) -> tuple[bool | None, str | None]:
    """(whether the server's TensorFlow has a GPU: True, False or None for unknown, a note)."""
    if not spec.gpu:
        return False, None  # hidden (CUDA_VISIBLE_DEVICES=-1), or no --gpus/--nv for a container
    if backend == "embedded":
        # The server's own interpreter and environment, in a process of its own.
        text, note = run_probe(embedded_gpu_probe_command(), GPU_PROBE_TIMEOUT_S, env=server_environment(spec, backend))
        if text is None:
            return None, f"GPU check: {note}"
        try:
            devices = json.loads(text.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return None, f"GPU check printed no device list: {text[-300:]!r}"
        if devices:
            return True, None
        return False, (
            "server.gpu is true, but TensorFlow in the embedded server's environment sees no GPU, so the "
            "model ran on the CPU: install a CUDA-enabled TensorFlow (pip install 'tensorflow[and-cuda]'), "
            "check nvidia-smi and CUDA_VISIBLE_DEVICES, or use a GPU TF Serving (docs/serving.md)"
        )
    if GPU_DEVICE_CREATED.search(log_text):
        return True, None
    return None, (
        "server.gpu is true, but the server's log does not show TensorFlow creating a GPU device (it logs "
        "that at INFO level, which TF_CPP_MIN_LOG_LEVEL >= 1 hides): check that the image or binary is a GPU "
        "build"
    )


def identify(spec: ServerSpec, backend: str, command: list[str], container: str | None, log_text: str) -> ServerFacts:
    """Everything provenance records about the server that is up now."""
    notes: list[str] = []
    facts = ServerFacts()
    if backend == "embedded":
        # Same interpreter and package as the server; computed here so TensorFlow is not imported.
        from serveprof.server.main import version_text

        server_version, tensorflow = parse_version_text(version_text())
    else:
        probe = version_command(spec, backend, command, container)
        text, note = run_probe(probe, with_stderr=True) if probe else (None, "no container to ask")
        server_version, tensorflow = parse_version_text(text or "")
        if text is not None and server_version is None:
            note = f"`{' '.join(probe)}` printed no version: {text.strip()[-300:]!r}"
        if server_version is None:
            notes.append(f"version: {note}")
    label = version_label(server_version, tensorflow)
    image = digest = image_id = None
    if backend == "docker":
        image = image_reference(spec)
        facts.host_pid, image_id, digest = docker_facts(spec, container, notes) if container else (None, None, None)
    elif backend == "apptainer":
        image = apptainer_image(spec)
        if is_image_file(spec):
            try:
                digest = file_sha256(image)
            except OSError as error:
                notes.append(f"image digest: {error}")
        else:
            notes.append(
                f"Apptainer pulled {image} when the server started; no digest is recorded: pull a .sif "
                "(docs/hpc.md) to pin the image"
            )
    gpu_used, facts.gpu_warning = gpu_status(spec, backend, log_text)
    if facts.gpu_warning:
        notes.append(facts.gpu_warning)
    facts.info = {
        # What served, in one line (the report and coldstart.csv show it): "2.18.0 (TensorFlow 2.18.0) in <image>".
        "version": (f"{label} in {image}" if label else image) if image else (label or "unknown"),
        "tensorflow_version": tensorflow,
        "image": image,
        "image_digest": digest,
        "image_id": image_id,
        "gpu_requested": spec.gpu,
        "gpu_used": gpu_used,
        "notes": notes,
    }
    return facts
