"""The load generator's parent side: worker processes started, started together, read, stopped.

``with LoadGenerator(plans) as generator:`` spawns one process per ``WorkerPlan``
(``multiprocessing``'s ``spawn``: a fresh interpreter, no copy of this process's
threads or sockets), waits until each has opened and tried its connections, then
``begin(start_ns)`` lets them go at one instant of the shared monotonic clock.
``receive(timeout_s)`` collects the slices of answers that arrived; ``stop()`` ends the
load and collects the last ones. Leaving the block stops and reaps every worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.load.worker import RECORD_FIELDS, WorkerPlan, run

READY_TIMEOUT_S = 120.0  # every connection opened and one request answered (a big model's first run is slow)
JOIN_TIMEOUT_S = 10.0
STATUS = RECORD_FIELDS.index("status")


@dataclass
class Answers:
    """What every worker has sent so far: rows of ``RECORD_FIELDS``, statuses by name."""

    rows: list[np.ndarray] = field(default_factory=list)
    covered_ns: dict[int, int] = field(default_factory=dict)  # worker -> time up to which its answers are in
    examples: dict[str, str] = field(default_factory=dict)  # status -> the first message with it
    abandoned: int = 0  # requests still unanswered when the workers gave up waiting at the stop

    def covered(self) -> int:
        """The time up to which every worker's answers are in."""
        return min(self.covered_ns.values()) if self.covered_ns else 0

    def table(self) -> np.ndarray:
        if not self.rows:
            return np.empty((0, len(RECORD_FIELDS)), dtype=np.int64)
        if len(self.rows) > 1:
            self.rows = [np.concatenate(self.rows)]
        return self.rows[0]


class LoadGenerator:
    def __init__(self, plans: Sequence[WorkerPlan]):
        if not plans:
            raise ValueError("no worker plans")
        self.plans = list(plans)
        self.answers = Answers()
        self.statuses: dict[str, int] = {"OK": 0}  # global status codes, "OK" first
        self.pids: list[int] = []
        self._processes: list = []
        self._channels: list = []
        self._open: dict = {}  # channel -> worker index, for workers not finished
        self._stopped = False

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> LoadGenerator:
        context = multiprocessing.get_context("spawn")
        try:
            for index, plan in enumerate(self.plans):
                parent_end, child_end = context.Pipe()
                process = context.Process(
                    target=run, args=(plan, child_end), daemon=True, name=f"serveprof-load-{index}"
                )
                process.start()
                child_end.close()
                self._processes.append(process)
                self._channels.append(parent_end)
                self._open[parent_end] = index
            self._wait_ready()
        except BaseException:
            self._reap()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if not self._stopped and exc[0] is None:
                self.stop()
        finally:
            self._reap()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = dict(self._open)
        while waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServeprofError(
                    f"{len(waiting)} load worker(s) did not open their connections within {READY_TIMEOUT_S:g} s",
                    "check that the server answers (its log), or use fewer connections",
                )
            for channel in wait(list(waiting), remaining):
                index = waiting.pop(channel)
                try:
                    message = channel.recv()
                except EOFError:
                    message = ("error", "the worker process exited")
                if message[0] == "error":
                    raise ServeprofError(
                        f"load worker {index} could not send its first request: {message[1]}",
                        "check the server's log; the model may refuse this batch size or input",
                    )
                self.pids.append(message[1])

    def begin(self, start_ns: int) -> None:
        """Start every worker's load at ``start_ns`` (``time.monotonic_ns()``, a little ahead)."""
        for channel in self._channels:
            channel.send(("start", start_ns))

    # ----------------------------------------------------------------- answers

    def _take(self, index: int, message: tuple) -> None:
        kind, covered, rows, statuses, examples = message[:5]
        if len(rows):
            # Worker-local status numbers become global ones.
            mapping = np.array([self.statuses.setdefault(name, len(self.statuses)) for name in statuses], np.int64)
            rows = rows.copy()
            rows[:, STATUS] = mapping[rows[:, STATUS]]
            self.answers.rows.append(rows)
        for name, text in examples.items():
            self.answers.examples.setdefault(name, text)
        self.answers.covered_ns[index] = covered
        if kind == "last":
            self.answers.abandoned += message[5]
            del self._open[self._channels[index]]

    def receive(self, timeout_s: float) -> None:
        """Collect what arrives within ``timeout_s``; a worker that died is an error."""
        deadline = time.monotonic() + timeout_s
        while self._open:
            remaining = deadline - time.monotonic()
            ready = wait(list(self._open), max(0.0, remaining))
            if not ready:
                return
            for channel in ready:
                index = self._open[channel]
                try:
                    message = channel.recv()
                except EOFError:
                    raise ServeprofError(
                        f"load worker {index} (pid {self._processes[index].pid}) exited during the load",
                        "check the machine's memory and the job log; rerun the point",
                    ) from None
                self._take(index, message)
            if remaining <= 0:
                return

    def status_names(self) -> list[str]:
        """Status names by their number in the rows."""
        return sorted(self.statuses, key=self.statuses.get)

    def stop(self) -> None:
        """End the load; wait for the answers in flight (up to each plan's ``drain_s``)."""
        if self._stopped:
            return
        self._stopped = True
        for channel in list(self._open):
            with contextlib.suppress(OSError):
                channel.send(("stop",))
        drain = max(plan.drain_s for plan in self.plans) + JOIN_TIMEOUT_S
        deadline = time.monotonic() + drain
        while self._open and time.monotonic() < deadline:
            self.receive(deadline - time.monotonic())

    def _reap(self) -> None:
        for channel in self._channels:
            with contextlib.suppress(OSError):
                channel.close()
        for process in self._processes:
            process.join(JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
