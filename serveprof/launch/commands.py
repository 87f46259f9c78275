"""The command line of each backend, and of the probes that say what served.

Every backend gets tensorflow_model_server's own flags. Containers see the model base
path mounted read-only at ``/models/<name>``; Docker publishes the container's fixed
ports 8500/8501 on the chosen host ports, Apptainer shares the host's network so the
server binds the chosen ports itself. Only the embedded server takes ``--host``: TF
Serving has no such flag and listens on all interfaces (docs/serving.md).

The probes (version, image digest, container pid, GPU visibility) are built here as
plain command lines, so tests can check them; serveprof/launch/probes.py runs them.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from pathlib import Path

from serveprof.errors import ServeprofError
from serveprof.launch.gpus import docker_gpus_value, host_gpus
from serveprof.launch.options import MOUNT, option_flags
from serveprof.launch.spec import ServerSpec

# Local Apptainer image files, told apart from image references by their suffix.
SIF_SUFFIXES = (".sif", ".simg")
CONTAINER_GRPC_PORT, CONTAINER_REST_PORT = 8500, 8501
CONTAINER_LABEL = "serveprof.launcher"  # `docker ps --filter label=serveprof.launcher` finds leftovers


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


def split_reference(reference: str) -> tuple[str, str | None]:
    """(repository, tag or None) of an image reference; a digest (``@sha256:...``) is dropped."""
    name = reference.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:  # a registry's port ("host:5000/serving") is not a tag
        repository, tag = name.rsplit(":", 1)
        return repository, tag
    return name, None


def image_reference(spec: ServerSpec) -> str:
    """The image to run: ``image:image_tag``, or ``image`` as given when it has its own tag or a digest.

    With ``gpu`` the tag gets ``-gpu`` (TF Serving's GPU images are ``<tag>-gpu``), an
    image's own tag included, unless it already ends in ``-gpu``. A digest pins one
    image, which cannot be retagged: it is used as given (pin a GPU image's digest).
    """
    if "@" in spec.image:
        return spec.image
    repository, tag = split_reference(spec.image)
    tag = tag or spec.image_tag
    if spec.gpu and not tag.endswith("-gpu"):
        tag += "-gpu"
    return f"{repository}:{tag}"


def is_image_file(spec: ServerSpec) -> bool:
    return spec.image.endswith(SIF_SUFFIXES) or os.path.exists(spec.image)


def apptainer_image(spec: ServerSpec) -> str:
    """A local image file (.sif) as is; anything else is pulled from Docker Hub's reference."""
    if is_image_file(spec):
        return str(Path(spec.image).resolve())
    return f"docker://{image_reference(spec)}"


def container_name(spec: ServerSpec) -> str:
    model = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.model_name)[:40]
    return f"serveprof-{model}-{uuid.uuid4().hex[:12]}"


def docker_gpus(spec: ServerSpec) -> str:
    """The GPUs the job was given (all when the scheduler gave no list): the daemon runs outside the job."""
    devices = host_gpus()
    if devices == ():
        raise ServeprofError(
            f"server.gpu is true, but this job was given no GPU (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r})",
            "run it where the scheduler gives the job a GPU (docs/hpc.md, one serving job per GPU), or set server.gpu: false",
        )
    return docker_gpus_value(devices)


def model_server_flags(
    spec: ServerSpec, grpc_port: int, rest_port: int, base_path: str, options_dir: str | None = None
) -> list[str]:
    """tensorflow_model_server's flags; ``options_dir`` is where the server sees its option files (launch/options.py)."""
    flags = [
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        f"--model_name={spec.model_name}",
        f"--model_base_path={base_path}",
    ]
    if spec.intra_op_threads:
        flags.append(f"--tensorflow_intra_op_parallelism={spec.intra_op_threads}")
    if spec.inter_op_threads:
        flags.append(f"--tensorflow_inter_op_parallelism={spec.inter_op_threads}")
    # TF Serving's 30 s REST deadline would answer 504 to a request the client still waits for.
    flags.append(f"--rest_api_timeout_in_ms={round(spec.request_timeout_s * 1000)}")
    if spec.tensor_content:
        flags.append("--enable_serialization_as_tensor_content=true")
    if options_dir is not None:
        flags += option_flags(spec, options_dir)
    return flags + list(spec.extra_flags)


def container_limit_flags(spec: ServerSpec, backend: str) -> list[str]:
    """A device's limits as the container runtime's own flags (a CFS quota and a memory cgroup).

    Swap is set equal to memory, so the cap is not eased by swapping. Docker gets no
    ``--cpuset-cpus``: its daemon may be another machine, whose CPU numbers are not ours.
    """
    device = spec.device
    flags: list[str] = []
    if device.cpus is not None:
        flags += ["--cpus", f"{device.cpus:g}"]
    if device.memory is not None:
        size = str(device.memory_bytes)
        flags += ["--memory", size, "--memory-swap", size]
    return flags if backend in ("docker", "apptainer") else []


def build_command(
    spec: ServerSpec,
    backend: str,
    grpc_port: int,
    rest_port: int,
    name: str | None = None,
    options_dir: str | None = None,
) -> list[str]:
    """The full command line; ``name`` is the Docker container's name, ``options_dir`` the folder of the
    option files on this machine (containers get it mounted read-only at ``options.MOUNT``)."""
    mounted = f"/models/{spec.model_name}"
    seen_options = MOUNT if options_dir is not None else None
    if backend == "embedded":
        return [
            sys.executable,
            "-m",
            "serveprof",
            "serve",
            f"--host={spec.host}",
            *model_server_flags(spec, grpc_port, rest_port, spec.model_base_path, options_dir),
        ]
    if backend == "tfserving":
        binary = executable(
            spec.tfserving_path,
            "tensorflow_model_server",
            "install TF Serving's binary and set server.tfserving_path to it, or use "
            "server.backend: embedded, docker or apptainer (docs/serving.md)",
        )
        return [binary, *model_server_flags(spec, grpc_port, rest_port, spec.model_base_path, options_dir)]
    if backend == "docker":
        # --init: docker-init is PID 1 and passes SIGTERM on. tensorflow_model_server as PID 1 would ignore
        # it (no handler), so every stop would wait out the grace period and end in SIGKILL.
        command = [
            spec.docker_path,
            "run",
            "--rm",
            "--init",
            "--name",
            name or container_name(spec),
            "--label",
            f"{CONTAINER_LABEL}=serveprof",
            "--label",
            f"serveprof.launcher_pid={os.getpid()}",
            "--label",
            f"serveprof.model={spec.model_name}",
            "-p",
            f"{spec.host}:{grpc_port}:{CONTAINER_GRPC_PORT}",
            "-p",
            f"{spec.host}:{rest_port}:{CONTAINER_REST_PORT}",
            "--mount",
            f"type=bind,source={spec.model_base_path},target={mounted},readonly",
        ]
        if options_dir is not None:
            command += ["--mount", f"type=bind,source={options_dir},target={MOUNT},readonly"]
        if spec.gpu:
            command += ["--gpus", docker_gpus(spec)]
        command += container_limit_flags(spec, backend)
        # The image's entrypoint script adds its own --port/--model_name; call the binary directly.
        command += ["--entrypoint", "tensorflow_model_server", image_reference(spec)]
        return command + model_server_flags(spec, CONTAINER_GRPC_PORT, CONTAINER_REST_PORT, mounted, seen_options)
    if backend == "apptainer":
        command = [spec.apptainer_path, "exec"]
        if spec.gpu:
            command.append("--nv")
        command += container_limit_flags(spec, backend)
        command += ["--bind", f"{spec.model_base_path}:{mounted}:ro"]
        if options_dir is not None:
            command += ["--bind", f"{options_dir}:{MOUNT}:ro"]
        command += [apptainer_image(spec), "tensorflow_model_server"]
        return command + model_server_flags(spec, grpc_port, rest_port, mounted, seen_options)
    raise ServeprofError(
        f"unknown server backend {backend!r}", "set server.backend to auto, embedded, tfserving, docker or apptainer"
    )


def server_environment(spec: ServerSpec, backend: str) -> dict[str, str] | None:
    """The server's environment: ours, with GPUs hidden when ``gpu`` is false (None: ours unchanged).

    TensorFlow uses a GPU it can see, so without this ``gpu: false`` on a GPU node would
    still measure the GPU. Docker needs nothing: a container sees no GPU without ``--gpus``.
    With ``gpu`` ours is kept, so the scheduler's ``CUDA_VISIBLE_DEVICES`` (the job's own GPU)
    reaches the server; Apptainer passes it into the container (launch/gpus.py).
    """
    if spec.gpu or backend == "docker":
        return None
    return {**os.environ, "CUDA_VISIBLE_DEVICES": "-1"}


def parse_version_text(text: str) -> tuple[str | None, str | None]:
    """(ModelServer version, TensorFlow version) from ``--version`` output
    ("TensorFlow ModelServer: X\\nTensorFlow Library: Y"); None for what it does not say."""
    server = re.search(r"TensorFlow ModelServer:\s*(\S+)", text)
    library = re.search(r"TensorFlow Library:\s*(\S+)", text)
    return (server.group(1) if server else None), (library.group(1) if library else None)


def version_label(server: str | None, tensorflow: str | None) -> str | None:
    """ "X (TensorFlow Y)", the form ``version`` takes in provenance."""
    if not server:
        return None
    return f"{server} (TensorFlow {tensorflow})" if tensorflow else server


def version_command(spec: ServerSpec, backend: str, command: list[str], container: str | None) -> list[str] | None:
    """``tensorflow_model_server --version`` of the binary that serves (None for embedded: known in-process)."""
    if backend == "tfserving":
        return [command[0], "--version"]
    if backend == "docker" and container:
        return [spec.docker_path, "exec", container, "tensorflow_model_server", "--version"]  # the running container
    if backend == "apptainer":
        return [spec.apptainer_path, "exec", apptainer_image(spec), "tensorflow_model_server", "--version"]
    return None


def docker_container_inspect_command(spec: ServerSpec, container: str) -> list[str]:
    """The container's main process as a host pid (0 once it stopped) and the id of the image it runs."""
    return [spec.docker_path, "inspect", "--type", "container", "--format", "{{.State.Pid}} {{.Image}}", container]


def docker_image_inspect_command(spec: ServerSpec, image_id: str) -> list[str]:
    """The registry digests of an image (``repository@sha256:...``; none for a locally built image)."""
    return [spec.docker_path, "image", "inspect", "--format", "{{json .RepoDigests}}", image_id]


GPU_PROBE = (
    "import json, tensorflow as tf; "
    "print(json.dumps([device.name for device in tf.config.list_physical_devices('GPU')]))"
)


def embedded_gpu_probe_command() -> list[str]:
    """The GPUs TensorFlow sees, asked of the embedded server's interpreter in a process of its own
    (importing TensorFlow costs seconds, so the launcher never does)."""
    return [sys.executable, "-c", GPU_PROBE]
