"""Progress lines for the model steps: long steps must show in the job's log that they are alive."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator


def log(command: str, message: str) -> None:
    print(f"serveprof {command}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(command: str, step: str) -> Iterator[None]:
    """Log the start of ``step`` and, when it finishes, how long it took."""
    log(command, f"{step} ...")
    started = time.monotonic()
    yield
    log(command, f"{step}: done in {time.monotonic() - started:.1f} s")
