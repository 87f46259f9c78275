"""Start a server process that cannot outlive its launcher, and stop it in order.

- ``start_new_session``: a terminal's Ctrl-C goes to the launcher's process group
  only, so the launcher, not the keyboard, decides when and how the server stops.
- ``PR_SET_PDEATHSIG``: if the launcher dies without cleaning up (SIGKILL, OOM
  killer), the kernel signals the server. The signal follows the *thread* that
  started the server, so launch from a thread that outlives the server (the main
  thread does). A Docker container is the docker daemon's child, not ours: the
  ``docker run`` client gets SIGTERM, which it passes on to the container (whose
  ``--init`` passes it to TF Serving); a client killed outright leaves the container
  running (docs/serving.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
from collections.abc import Callable
from typing import IO

import psutil

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 5.0


def _prctl() -> Callable | None:
    # Loaded before fork: the child must only call it, not load a library while
    # another thread of the parent may hold the loader's lock.
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):
        return None


def spawn(
    command: list[str],
    log: IO[bytes],
    death_signal: int,
    env: dict[str, str] | None = None,
    confine: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """Start ``command`` with stdout and stderr into ``log``, in its own session, tied to our life.

    ``confine`` runs in the child before it executes ``command`` (joining a cgroup, pinning
    CPUs: serveprof/launch/limits.py), so the limits hold from the server's first instruction.
    """
    parent = os.getpid()
    prctl = _prctl()

    def tie_to_parent() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the launcher died before prctl took effect
            os._exit(1)
        if confine is not None:
            confine()

    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
        preexec_fn=tie_to_parent,
    )


def stop(process: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's process group, SIGKILL after ``grace_s``; whatever it started goes too.

    A second Ctrl-C or SIGTERM while waiting cuts the grace short, never the kill.
    """
    try:
        descendants = psutil.Process(process.pid).children(recursive=True) if process.poll() is None else []
    except psutil.Error:
        descendants = []
    try:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for child in descendants:  # psutil checks identity, so a reused pid is left alone
            with contextlib.suppress(psutil.Error):
                child.kill()
