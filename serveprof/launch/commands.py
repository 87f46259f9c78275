"""The command line of each backend, and what it reports as its version.

Every backend gets tensorflow_model_server's own flags. Containers see the model base
path mounted read-only at ``/models/<name>``; Docker publishes the container's fixed
ports 8500/8501 on the chosen host ports, Apptainer shares the host's network so the
server binds the chosen ports itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.launch.spec import ServerSpec

CONTAINER_GRPC_PORT, CONTAINER_REST_PORT = 8500, 8501
CONTAINER_LABEL = "serveprof.launcher"  # `docker ps --filter label=serveprof.launcher` finds leftovers
VERSION_PROBE_TIMEOUT_S = 60


def resolve_backend(spec: ServerSpec) -> str:
    """``auto`` becomes ``tfserving`` when tensorflow_model_server can be found, else ``embedded``."""
    if spec.backend != "auto":
        return spec.backend
    return "tfserving" if shutil.which(spec.tfserving_path) else "embedded"


def executable(path: str, what: str, fix: str) -> str:
    found = shutil.which(path)
    if not found:
        raise ServeprofError(f"{what} not found: {path!r} is neither on PATH nor an executable file", fix)
    return found


def image_reference(spec: ServerSpec) -> str:
    """``image:tag`` (``-gpu`` appended to the tag for GPU), unless ``image`` already pins a tag or digest."""
    last = spec.image.rsplit("/", 1)[-1]
    if "@" in spec.image or ":" in last:
        return spec.image
    return f"{spec.image}:{spec.image_tag}{'-gpu' if spec.gpu else ''}"


def apptainer_image(spec: ServerSpec) -> str:
    """A local image file (.sif) as is; anything else is pulled from Docker Hub's reference."""
    if spec.image.endswith((".sif", ".simg")) or os.path.exists(spec.image):
        return str(Path(spec.image).resolve())
    return f"docker://{image_reference(spec)}"


def container_name(spec: ServerSpec) -> str:
    model = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.model_name)[:40]
    return f"serveprof-{model}-{uuid.uuid4().hex[:12]}"


def model_server_flags(spec: ServerSpec, grpc_port: int, rest_port: int, base_path: str) -> list[str]:
    flags = [f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--model_name={spec.model_name}",
             f"--model_base_path={base_path}"]
    if spec.intra_op_threads:
        flags.append(f"--tensorflow_intra_op_parallelism={spec.intra_op_threads}")
    if spec.inter_op_threads:
        flags.append(f"--tensorflow_inter_op_parallelism={spec.inter_op_threads}")
    return flags + list(spec.extra_flags)


def build_command(spec: ServerSpec, backend: str, grpc_port: int, rest_port: int, name: str | None = None) -> list[str]:
    """The full command line; ``name`` is the Docker container's name."""
    mounted = f"/models/{spec.model_name}"
    if backend == "embedded":
        return [sys.executable, "-m", "serveprof", "serve", f"--host={spec.host}",
                *model_server_flags(spec, grpc_port, rest_port, spec.model_base_path)]
    if backend == "tfserving":
        binary = executable(spec.tfserving_path, "tensorflow_model_server",
                            "install TF Serving's binary and set server.tfserving_path to it, or use "
                            "server.backend: embedded, docker or apptainer (docs/serving.md)")
        return [binary, *model_server_flags(spec, grpc_port, rest_port, spec.model_base_path)]
    if backend == "docker":
        command = [spec.docker_path, "run", "--rm", "--name", name or container_name(spec),
                   "--label", f"{CONTAINER_LABEL}=serveprof", "--label", f"serveprof.launcher_pid={os.getpid()}",
                   "--label", f"serveprof.model={spec.model_name}",
                   "-p", f"{spec.host}:{grpc_port}:{CONTAINER_GRPC_PORT}",
                   "-p", f"{spec.host}:{rest_port}:{CONTAINER_REST_PORT}",
                   "--mount", f"type=bind,source={spec.model_base_path},target={mounted},readonly"]
        if spec.gpu:
            command += ["--gpus", "all"]
        # The image's entrypoint script adds its own --port/--model_name; call the binary directly.
        command += ["--entrypoint", "tensorflow_model_server", image_reference(spec)]
        return command + model_server_flags(spec, CONTAINER_GRPC_PORT, CONTAINER_REST_PORT, mounted)
    if backend == "apptainer":
        command = [spec.apptainer_path, "exec"]
        if spec.gpu:
            command.append("--nv")
        command += ["--bind", f"{spec.model_base_path}:{mounted}:ro", apptainer_image(spec), "tensorflow_model_server"]
        return command + model_server_flags(spec, grpc_port, rest_port, mounted)
    raise ServeprofError(f"unknown server backend {backend!r}", "set server.backend to auto, embedded, tfserving, docker or apptainer")


def parse_version_text(text: str) -> str | None:
    """``--version`` output ("TensorFlow ModelServer: X\\nTensorFlow Library: Y") as "X (TensorFlow Y)"."""
    server = re.search(r"TensorFlow ModelServer:\s*(\S+)", text)
    library = re.search(r"TensorFlow Library:\s*(\S+)", text)
    if not server:
        return None
    return f"{server.group(1)} (TensorFlow {library.group(1)})" if library else server.group(1)


def backend_version(spec: ServerSpec, backend: str, command: list[str]) -> str:
    """What served, for provenance: the server's version, or the image for containers."""
    if backend == "embedded":
        # Same interpreter and package as the server; computed here so TensorFlow is not imported.
        from serveprof.server.main import version_text

        return parse_version_text(version_text()) or "unknown"
    if backend == "tfserving":
        try:
            probe = subprocess.run([command[0], "--version"], capture_output=True, text=True,
                                   timeout=VERSION_PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return parse_version_text(probe.stdout + probe.stderr) or "unknown"
    return apptainer_image(spec) if backend == "apptainer" else image_reference(spec)
