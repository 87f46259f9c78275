"""What to launch: the server settings (the config's ``server:`` block) plus the model to serve.

Both are complete when they get here: serveprof.settings validates the block and
fills the schema's defaults, so nothing in the launcher repeats them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from serveprof.errors import ServeprofError
from serveprof.launch.device import HOST_DEVICE, DeviceSettings

# TF Serving's Prometheus page (monitoring_config.proto), served on the REST port.
METRICS_PATH = "/monitoring/prometheus/metrics"

BACKENDS = ("auto", "embedded", "tfserving", "docker", "apptainer")


@dataclass(frozen=True)
class ServerSettings:
    """How to serve, whatever the model: one field per key of the ``server:`` block."""

    backend: str
    tfserving_path: str
    docker_path: str
    apptainer_path: str
    image: str
    image_tag: str
    gpu: bool
    host: str
    startup_timeout_s: float
    intra_op_threads: int
    inter_op_threads: int
    extra_flags: tuple[str, ...]
    # BatchingParameters fields (server.batching): --enable_batching with a file of them; None: batching off.
    batching: Mapping[str, Any] | None
    monitoring: bool  # TF Serving's Prometheus page on the REST port (--monitoring_config_file)
    tensor_content: bool  # --enable_serialization_as_tensor_content
    request_timeout_s: float  # --rest_api_timeout_in_ms, and how long the measuring client waits


@dataclass(frozen=True)
class ServerSpec(ServerSettings):
    """One server to launch: the settings and the model it serves."""

    model_name: str
    model_base_path: str  # absolute: containers mount it and the server may run elsewhere
    log_path: str | None = None
    # Where to serve TF Serving's Prometheus page on the REST port (--monitoring_config_file); None: no page.
    metrics_path: str | None = None
    device: DeviceSettings = field(default=HOST_DEVICE)  # the limits it runs under (launch/limits.py)

    @classmethod
    def serving(
        cls,
        settings: ServerSettings,
        model_name: str,
        model_base_path: str,
        log_path: str | None = None,
        metrics_path: str | None = None,
        device: DeviceSettings | None = None,
    ) -> ServerSpec:
        """The server for one model; a device's thread pools take the place of the ``server:`` block's."""
        if not model_name:
            raise ServeprofError("no model name given to launch", "pass the model key as the model name")
        device = device or HOST_DEVICE
        fields = {
            name: value for name, value in asdict(settings).items() if name in ServerSettings.__dataclass_fields__
        }
        if device.intra_op_threads:
            fields["intra_op_threads"] = device.intra_op_threads
        if device.inter_op_threads:
            fields["inter_op_threads"] = device.inter_op_threads
        return cls(
            **fields,
            model_name=model_name,
            model_base_path=os.path.abspath(model_base_path),
            log_path=str(log_path) if log_path else None,
            # server.monitoring turns TF Serving's page on at its usual path; a caller may ask for one anyway.
            metrics_path=metrics_path or (METRICS_PATH if settings.monitoring else None),
            device=device,
        )
