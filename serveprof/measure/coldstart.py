"""A model's cold start: how long it takes to load, and its first inference at batch 1.

``load_ms`` runs from the server process's start to the model's AVAILABLE status (both
stamped by the launcher); ``first_infer_ms`` is the first request after that. The
server's own account splits the load: ``server_load_ms`` is the SavedModel load into a
Session, ``warmup_ms`` the replay of ``warmup_records`` warm-up records (server_side.py);
the rest of ``load_ms`` is process start-up (TensorFlow's import, for one) and opening
the ports. The whole machine is watched from before the launch to the end of the first
inference, and a disturbed cold start is measured again like a series (retry.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from serveprof.launch.device import DeviceSettings
from serveprof.launch.spec import ServerSettings
from serveprof.measure.inputs import AUTO, InputSettings
from serveprof.measure.procedure import time_one
from serveprof.measure.retry import DisturbanceSettings, disturbance_columns, retried
from serveprof.measure.server_side import startup
from serveprof.measure.session import launched


def cold_start(
    model: str,
    model_base_path: str,
    server: ServerSettings,
    input_settings: InputSettings,
    protocol: str,
    server_log: str | None,
    model_type: str = AUTO,
    transport: str = "builtin",
    disturbance: DisturbanceSettings | None = None,
    log: Callable[[str], None] = lambda message: None,
    device: DeviceSettings | None = None,
) -> dict:
    """Fresh servers for ``model``, under ``device``'s limits, until one starts undisturbed (or the retries are
    spent): the row of coldstart.csv."""
    disturbance = disturbance or DisturbanceSettings()

    def attempt() -> dict:
        server_pid: list[int | None] = [None]
        # Ours: this process and its children (the server, or a container runtime's client), and a
        # container's server once the launcher has found its pid.
        watch = disturbance.sampler(lambda: [os.getpid(), server_pid[0]], processes=())
        with watch:
            with launched(
                model, model_base_path, server, protocol, log_path=server_log, transport=transport, device=device
            ) as endpoint:
                server_pid[0] = endpoint.pid
                times = startup(endpoint.metrics_url, endpoint.log_tail)
                resolved, _ = endpoint.resolve_input(1, input_settings, model_type)
                request, _ = endpoint.prepare_request(1, resolved)
                first_infer_ms = time_one(
                    endpoint.client.send, request, endpoint.on_error(1), "first request (first inference)"
                )
        return {
            "model": model,
            "load_ms": (endpoint.available_ns - endpoint.started_ns) / 1e6,
            "first_infer_ms": first_infer_ms,
            "backend": endpoint.info.get("backend"),
            "backend_version": endpoint.info.get("version"),
            **times,
            "disturbance": watch.summary(),
        }

    row = retried(attempt, lambda row: row["disturbance"], disturbance, log, f"{model} cold start")
    record = row.pop("disturbance")
    return {**row, **disturbance_columns(record)}
