"""The launcher: start any serving backend, wait until the model is AVAILABLE, always tear it down.

Backends: ``embedded`` (``serveprof serve``), ``tfserving`` (a tensorflow_model_server
binary), ``docker`` and ``apptainer`` (the tensorflow/serving image); ``auto`` picks
tfserving when the binary is found, else embedded. docs/serving.md has the details.
"""

from serveprof.launch.device import DeviceSettings
from serveprof.launch.server import DoesNotFit, RunningServer, ServerDied, launch
from serveprof.launch.signals import terminate_on_sigterm
from serveprof.launch.spec import ServerSettings, ServerSpec

__all__ = [
    "DeviceSettings",
    "DoesNotFit",
    "RunningServer",
    "ServerDied",
    "ServerSettings",
    "ServerSpec",
    "launch",
    "terminate_on_sigterm",
]
