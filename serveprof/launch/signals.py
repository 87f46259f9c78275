"""SIGTERM as an exception, so ``with launch(...)`` tears the server down when a job is stopped."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Inside, SIGTERM (Snakemake or ``kill`` stopping the job) raises ``SystemExit(143)``.

    Further SIGTERMs are ignored once the first has been turned into the exception, so
    they cannot interrupt the teardown it started (which is bounded by process.stop's
    grace period). The previous handler is restored on leaving.
    """

    def stop(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
