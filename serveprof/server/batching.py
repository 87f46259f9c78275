"""Server-side batching as tensorflow_model_server does it: ``--enable_batching`` and BatchingParameters.

The semantics are TF Serving's BatchingSession on a SharedBatchScheduler
(batching/batching_session.cc, tensorflow/core/kernels/batching_util/shared_batch_scheduler.h):

- every Session run is a task; its size is the 0th dimension its inputs share;
- tasks with the same feed and fetch tensor names share a queue (one per signature,
  more made on demand for other combinations); every queue shares ``num_batch_threads``;
- a queue's open batch is closed when the next task would overflow ``max_batch_size``,
  and handed to a batch thread once it is full or its first task has waited
  ``batch_timeout_micros``; at most ``max_enqueued_batches`` batches may wait, beyond
  that a task is refused with UNAVAILABLE;
- a batch is concatenated along the 0th dimension, padded up to the next of
  ``allowed_batch_sizes`` with copies of the last task's first row (inputs of uneven
  inner shape are zero-padded first with ``pad_variable_length_inputs``), run once,
  and its outputs split back per task, the padding dropped.

Defaults are the scheduler's: max_batch_size 1000, batch_timeout_micros 0,
max_enqueued_batches 10, num_batch_threads = the CPUs this process may use.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serveprof.errors import ServeprofError
from serveprof.wire.status import Code, ServingError, invalid_argument

log = logging.getLogger("serveprof.serve")

DEFAULT_THREAD_POOL = "batch_threads"
SERVER_THREAD_POOL = "model_server_batch_threads"  # server.cc's name when --batching_parameters_file is not given


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_cpus)
    thread_pool_name: str = DEFAULT_THREAD_POOL
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def describe(self) -> str:
        return (
            f"max_batch_size {self.max_batch_size}, batch_timeout_micros {self.batch_timeout_micros}, "
            f"max_enqueued_batches {self.max_enqueued_batches}, num_batch_threads {self.num_batch_threads}, "
            f"allowed_batch_sizes {list(self.allowed_batch_sizes) or 'any'}, "
            f"pad_variable_length_inputs {str(self.pad_variable_length_inputs).lower()}"
        )


def batching_options(parameters=None) -> BatchingOptions:
    """The options a BatchingParameters proto (None: no file given) sets, checked as TF Serving checks them."""
    if parameters is None:
        return BatchingOptions(thread_pool_name=SERVER_THREAD_POOL)
    values: dict[str, Any] = {}
    for name in (
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
    ):
        if parameters.HasField(name):
            values[name] = getattr(parameters, name).value
    if parameters.HasField("enable_large_batch_splitting") and parameters.enable_large_batch_splitting.value:
        raise ServeprofError(
            "--batching_parameters_file sets enable_large_batch_splitting, which the embedded server "
            "does not implement",
            "remove enable_large_batch_splitting (and max_execution_batch_size), or use backend tfserving for it",
        )
    values["allowed_batch_sizes"] = tuple(parameters.allowed_batch_sizes)
    values["pad_variable_length_inputs"] = parameters.pad_variable_length_inputs
    options = BatchingOptions(**values)
    _check(options)
    return options


def _check(options: BatchingOptions) -> None:
    problem = None
    if options.num_batch_threads < 1:
        problem = f"num_batch_threads must be positive; was {options.num_batch_threads}"
    elif options.max_batch_size < 1:
        problem = f"max_batch_size must be positive; was {options.max_batch_size}"
    elif options.batch_timeout_micros < 0:
        problem = f"batch_timeout_micros must be non-negative; was {options.batch_timeout_micros}"
    elif options.max_enqueued_batches < 0:
        problem = f"max_enqueued_batches must be non-negative; was {options.max_enqueued_batches}"
    elif options.allowed_batch_sizes and options.allowed_batch_sizes[-1] != options.max_batch_size:
        # bundle_factory_util.cc, WrapSessionForBatching.
        problem = (
            f"Last entry in allowed_batch_sizes must match max_batch_size; last entry was "
            f"{options.allowed_batch_sizes[-1]}; expected {options.max_batch_size}"
        )
    elif any(later <= earlier for earlier, later in itertools.pairwise(options.allowed_batch_sizes)):
        problem = "allowed_batch_sizes entries must be monotonically increasing"
    if problem:
        raise ServeprofError(
            f"--batching_parameters_file: {problem}", "fix the BatchingParameters file (see docs/server.md, Batching)"
        )


def batching_parameters_text(settings: Mapping[str, Any]) -> str:
    """A text-format BatchingParameters file for ``settings`` (the same file for every backend).

    Keys are BatchingParameters' field names; wrapped fields are written ``name { value: N }``.
    """
    wrapped = {
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "thread_pool_name",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
    }
    lines = []
    for name, value in settings.items():
        if name in wrapped:
            shown = (
                f'"{value}"'
                if isinstance(value, str)
                else str(value).lower()
                if isinstance(value, bool)
                else int(value)
            )
            lines.append(f"{name} {{ value: {shown} }}")
        elif name == "allowed_batch_sizes":
            lines.extend(f"allowed_batch_sizes: {int(size)}" for size in value)
        elif name == "pad_variable_length_inputs":
            lines.append(f"pad_variable_length_inputs: {str(bool(value)).lower()}")
        else:
            raise ServeprofError(
                f"batching setting {name!r} is not a BatchingParameters field",
                f"use only: {', '.join(sorted(wrapped | {'allowed_batch_sizes', 'pad_variable_length_inputs'}))}",
            )
    text = "\n".join(lines) + "\n"
    from google.protobuf import text_format

    from serveprof.server.config_protos import message_class

    _check(batching_options(text_format.Parse(text, message_class("BatchingParameters")())))
    return text


# ------------------------------------------------------------------ the scheduler


class _Task:
    __slots__ = ("feeds", "fetches", "size", "enqueued", "timeout_ms", "done", "outputs", "error")

    def __init__(self, feeds, fetches, size: int, timeout_ms: int):
        self.feeds = feeds
        self.fetches = fetches
        self.size = size
        self.enqueued = time.monotonic()
        self.timeout_ms = timeout_ms
        self.done = threading.Event()
        self.outputs: list[np.ndarray] | None = None
        self.error: BaseException | None = None


class _Queue:
    """One feed/fetch signature's batches: the back one open, the rest closed, waiting for a thread."""

    def __init__(self, feed_names: tuple[str, ...], fetch_names: tuple[str, ...]):
        self.feed_names = feed_names
        self.fetch_names = fetch_names
        self.batches: deque[list[_Task]] = deque([[]])
        self.open_size = 0
        self.open_since = 0.0


class BatchingSession:
    """A SessionRunner in front of which every run is queued and batched; same ``run`` interface."""

    def __init__(self, runner, options: BatchingOptions, metrics=None):
        self.runner = runner
        self.options = options
        self.metrics = metrics
        self._queues: dict[tuple, _Queue] = {}
        self._order: list[_Queue] = []
        self._next = 0
        self._condition = threading.Condition()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._thread_loop, name=f"{options.thread_pool_name}_{index}", daemon=True)
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    # -------------------------------------------------------------- tasks in

    def run(self, feeds, fetches, timeout_ms: int = 0) -> list[np.ndarray]:
        feeds = sorted(feeds, key=lambda feed: feed[0])
        size = _batch_size(feeds)
        if self.metrics is not None:
            for _ in feeds:
                self.metrics.batch_input_size(size)
        task = _Task(feeds, list(fetches), size, timeout_ms)
        key = (tuple(name for name, _ in feeds), tuple(sorted(set(fetches))))
        limit = self.options.max_batch_size
        if size > limit:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size {limit}")
        with self._condition:
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(*key)
                self._order.append(queue)
            if queue.open_size + size > limit:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        Code.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted "
                        f"is full; currently {len(queue.batches)} batches enqueued and "
                        f"max_enqueued_batches is {self.options.max_enqueued_batches}",
                    )
                queue.batches.append([])
                queue.open_size = 0
            if not queue.batches[-1]:
                queue.open_since = task.enqueued
            queue.batches[-1].append(task)
            queue.open_size += size
            self._condition.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    # ------------------------------------------------------------ batch threads

    def _thread_loop(self) -> None:
        while True:
            with self._condition:
                batch, queue = self._take()
                while batch is None:
                    if self._closed:
                        return
                    self._condition.wait(timeout=self._wait_s())
                    batch, queue = self._take()
                self._condition.notify()  # more closed batches may be waiting for another thread
            self._process(queue, batch)

    def _wait_s(self) -> float | None:
        """Until the earliest open batch times out (None: until a task arrives)."""
        deadlines = [
            queue.open_since + self.options.batch_timeout_micros / 1e6
            for queue in self._order
            if len(queue.batches) == 1 and queue.batches[0]
        ]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _take(self) -> tuple[list[_Task] | None, _Queue | None]:
        """Round-robin over the queues: a closed batch, or the open one once full or timed out."""
        for _ in range(len(self._order)):
            queue = self._order[self._next % len(self._order)]
            self._next = (self._next + 1) % len(self._order)
            if len(queue.batches) == 1 and self._schedulable(queue):
                queue.batches.append([])
                queue.open_size = 0
            if len(queue.batches) >= 2:
                return queue.batches.popleft(), queue
        return None, None

    def _schedulable(self, queue: _Queue) -> bool:
        if not queue.batches[-1]:
            return False
        return (
            self._closed
            or queue.open_size >= self.options.max_batch_size
            or time.monotonic() >= queue.open_since + self.options.batch_timeout_micros / 1e6
        )

    def _process(self, queue: _Queue, batch: list[_Task]) -> None:
        dequeued = time.monotonic()
        deadline = 0.0
        expired = True
        for task in batch:
            task_deadline = task.enqueued + (task.timeout_ms / 1e3 if task.timeout_ms > 0 else float("inf"))
            if task_deadline > dequeued:
                expired = False
                deadline = max(deadline, task_deadline)
            if self.metrics is not None:
                self.metrics.batch_queuing(self.options.thread_pool_name, dequeued - task.enqueued)
        try:
            if expired:
                raise ServingError(Code.RESOURCE_EXHAUSTED, "Run() timeout exceeded while waiting in batching queue")
            timeout_ms = 0 if deadline == float("inf") else max(1, int((deadline - dequeued) * 1e3))
            merged, padding = self._merge(queue, batch)
            outputs = self.runner.run(merged, list(queue.fetch_names), timeout_ms)
            if self.metrics is not None:
                self.metrics.batch_run()
            self._split(queue, batch, outputs, padding)
        except BaseException as error:  # every task of the batch gets the batch's error
            for task in batch:
                task.error = error
        finally:
            for task in batch:
                task.done.set()

    def _merge(self, queue: _Queue, batch: list[_Task]) -> tuple[list, int]:
        total = sum(task.size for task in batch)
        target = _round_up(self.options.allowed_batch_sizes, total)
        padding = target - total
        if self.metrics is not None:
            self.metrics.batch_processed(target, padding)
        merged = []
        for index, name in enumerate(queue.feed_names):
            parts = [task.feeds[index][1] for task in batch]
            if self.options.pad_variable_length_inputs:
                parts = _pad_to_common_shape(parts)
            elif any(part.shape[1:] != parts[0].shape[1:] for part in parts[1:]):
                raise ServingError(
                    Code.FAILED_PRECONDITION,
                    f"Tensors with name '{name}' from different tasks have different shapes and padding "
                    "is turned off. Set pad_variable_length_inputs to true, or ensure that all tensors "
                    "with the same name have equal dimensions starting with the first dim.",
                )
            if padding:
                parts.append(np.repeat(parts[-1][:1], padding, axis=0))
            merged.append((name, parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)))
        return merged, padding

    def _split(self, queue: _Queue, batch: list[_Task], outputs: list[np.ndarray], padding: int) -> None:
        total = sum(task.size for task in batch)
        by_name = {}
        for name, tensor in zip(queue.fetch_names, outputs, strict=True):
            if tensor.ndim == 0:
                raise ServingError(Code.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
            if tensor.shape[0] != total + padding:
                raise ServingError(
                    Code.FAILED_PRECONDITION,
                    "Batched output tensor's 0th dimension does not equal "
                    "the sum of the 0th dimension sizes of the input tensors",
                )
            by_name[name] = tensor
        start = 0
        for task in batch:
            task.outputs = [by_name[name][start : start + task.size] for name in task.fetches]
            start += task.size


def _batch_size(feeds) -> int:
    """ComputeTensorBatchSize: the 0th dimension every input shares."""
    if not feeds:
        raise invalid_argument("Batching Run() must have at least one input tensor")
    size = None
    for _, array in feeds:
        if array.ndim < 1:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if size is not None and array.shape[0] != size:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
        size = array.shape[0]
    return size


def _round_up(allowed: tuple[int, ...], size: int) -> int:
    """RoundToLowestAllowedBatchSize."""
    for allowed_size in allowed:
        if allowed_size >= size:
            return allowed_size
    return size


def _pad_to_common_shape(parts: list[np.ndarray]) -> list[np.ndarray]:
    """AddPadding: each tensor zero-padded at the end of every dimension but the 0th to the batch's largest."""
    if parts[0].ndim < 1 or parts[0].ndim > 6:
        raise invalid_argument("Only tensors with rank from 1 to 6 can be padded.")
    largest = np.max([part.shape for part in parts], axis=0)
    padded = []
    for part in parts:
        widths = [(0, 0)] + [(0, int(largest[axis] - part.shape[axis])) for axis in range(1, part.ndim)]
        padded.append(
            np.pad(part, widths, constant_values=b"" if part.dtype == object else 0)
            if any(width for _, width in widths)
            else part
        )
    return padded
