"""Free ports for a server, and recognising a server that lost the race for them.

A port found free here can be taken by someone else before the server binds it;
the launcher then sees the server fail with one of the messages below and retries
with new ports.
"""

from __future__ import annotations

import contextlib
import re
import socket

# embedded server, gRPC core, TF Serving (gRPC and REST), Docker's port publishing
_CONFLICT = re.compile(
    r"already in use|Address in use|Failed to BuildAndStart gRPC server|"
    r"Failed to start HTTP Server|port is already allocated",
    re.IGNORECASE,
)


def free_ports(host: str, count: int = 2) -> list[int]:
    """``count`` distinct ports the kernel considers free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):  # all held open at once, so they differ
            probe = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            probe.bind((host, 0))
            ports.append(probe.getsockname()[1])
        return ports


def lost_port_race(log_text: str) -> bool:
    return bool(_CONFLICT.search(log_text))
