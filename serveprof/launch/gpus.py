"""Which GPUs this job was given, as the scheduler says it: one serving job per GPU.

SLURM (``--gpus=1``) and most launchers hand a job its GPUs in ``CUDA_VISIBLE_DEVICES``:
device indices or UUIDs, ``-1`` or empty for none. A process started from the job
inherits it (the embedded server, tensorflow_model_server, Apptainer's container), so
TensorFlow sees only those. Two things do not inherit it and are told here: the Docker
daemon, which runs outside the job and takes the devices as ``--gpus device=...``,
and NVML, which counts every GPU of the node (the resource sampler, measure/resources.py).

SLURM also sets ``SLURM_JOB_GPUS``, the node's own indices of the job's GPUs. Where
SLURM constrains devices with cgroups, ``CUDA_VISIBLE_DEVICES`` counts from 0 among the
job's GPUs instead, which is right inside the job and wrong for the daemon; so Docker
gets ``SLURM_JOB_GPUS`` when it is set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

NONE = ("", "-1", "NoDevFiles")  # what CUDA, and SLURM without a GPU, write for "no GPU"


def _entries(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def visible_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The GPUs this process may use (indices or UUIDs); () for none; None: not restricted (all of them)."""
    environ = os.environ if environ is None else environ
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return () if value.strip() in NONE else _entries(value)


def host_gpus(environ: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """The job's GPUs as the node numbers them (for a daemon outside the job); None: not restricted."""
    environ = os.environ if environ is None else environ
    job = environ.get("SLURM_JOB_GPUS")
    if job is not None and job.strip() not in NONE:
        return _entries(job)
    return visible_gpus(environ)


def docker_gpus_value(devices: tuple[str, ...] | None) -> str:
    """``docker run --gpus``'s value: ``all``, ``device=0`` or ``"device=0,1"``.

    Docker reads the value as one CSV record, so a list of devices is quoted to stay one field.
    """
    if devices is None:
        return "all"
    if len(devices) == 1:
        return f"device={devices[0]}"
    return f'"device={",".join(devices)}"'
