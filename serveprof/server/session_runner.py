"""Session runs on tensor names, as TF Serving's ``Session::Run``, through one cached callable per feed/fetch set.

``Session::MakeCallable`` prepares the executors for one set of feeds and fetches once
(DirectSession caches the same per set inside ``Session::Run``); calling it then costs
one C++ call per request. ``Session.make_callable`` with feeds would instead go through
``Session.run``'s Python feed handling, which also checks shapes against the graph's
static shapes: a check ``Session::Run`` does not make. So the callable is made from
CallableOptions and called directly.

A feed whose dtype differs from its tensor's is run through the C API's
``TF_SessionRun`` (``Session::Run`` itself) instead, so the error is TensorFlow's own:
"Expects arg[0] to be float but double is provided", as tensorflow_model_server says it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np


class SessionRunner:
    """Run ``fetches`` given ``feeds`` (tensor names) in one loaded Session; thread-safe."""

    def __init__(self, session):
        self.session = session
        self.graph = session.graph
        self._callables: dict[tuple, object] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._lock = threading.Lock()

    def run(
        self, feeds: Sequence[tuple[str, np.ndarray]], fetches: Sequence[str], timeout_ms: int = 0
    ) -> list[np.ndarray]:
        """The fetched tensors as ndarrays; TensorFlow's errors (tf.errors.OpError) propagate as they are."""
        if len(feeds) > 1:
            feeds = sorted(feeds, key=lambda feed: feed[0])  # DirectSession's canonical order
        names, arrays = tuple([name for name, _ in feeds]), [array for _, array in feeds]
        for name, array in feeds:
            if _mismatch(array, self._dtype(name)):
                return self._run_checked(feeds, fetches, timeout_ms)
        key = (names, tuple(fetches), timeout_ms)
        runner = self._callables.get(key)
        if runner is None:
            runner = self._make_callable(key)
        return runner(*arrays)

    def _dtype(self, name: str) -> np.dtype | None:
        """The numpy dtype the graph's tensor ``name`` takes; None if there is no such tensor (the run says so)."""
        dtype = self._dtypes.get(name)
        if dtype is None:
            try:
                tensor_dtype = self.graph.get_tensor_by_name(name).dtype
            except (KeyError, ValueError):
                return None
            dtype = np.dtype(object) if tensor_dtype.name == "string" else np.dtype(tensor_dtype.as_numpy_dtype)
            self._dtypes[name] = dtype
        return dtype

    def _make_callable(self, key: tuple):
        from tensorflow.core.protobuf import config_pb2

        names, fetches, timeout_ms = key
        with self._lock:
            runner = self._callables.get(key)
            if runner is None:
                options = config_pb2.CallableOptions(feed=list(names), fetch=list(fetches))
                if timeout_ms > 0:
                    options.run_options.timeout_in_ms = timeout_ms
                runner = self.session._make_callable_from_options(options)
                self._callables[key] = runner
        return runner

    def _run_checked(self, feeds, fetches, timeout_ms: int) -> list[np.ndarray]:
        """Through ``Session::Run`` itself, so TensorFlow reports the mismatch in its own words."""
        from tensorflow.core.protobuf import config_pb2
        from tensorflow.python.client import session as session_module

        options = None
        if timeout_ms > 0:
            options = session_module.tf_session.TF_NewBufferFromString(
                config_pb2.RunOptions(timeout_in_ms=timeout_ms).SerializeToString()
            )
        feed_map = {self.graph.get_tensor_by_name(name)._as_tf_output(): array for name, array in feeds}
        fetch_list = [self.graph.get_tensor_by_name(name)._as_tf_output() for name in fetches]
        try:
            return self.session._call_tf_sessionrun(options, feed_map, fetch_list, [], None)
        finally:
            if options is not None:
                session_module.tf_session.TF_DeleteBuffer(options)


def _mismatch(array: np.ndarray, expected: np.dtype | None) -> bool:
    return expected is not None and array.dtype != expected
