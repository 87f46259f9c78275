"""Shared fixtures: a tiny SavedModel in TF Serving's layout and real ``serveprof serve`` processes.

- ``tiny_classifier_base``: a model base path holding version ``1`` of the tiny
  classifier (input ``images`` float32 [None, 8, 8, 3] -> ``probabilities`` [None, 3]),
  exported once per session in a subprocess (TensorFlow stays out of pytest's start).
- ``embedded_server``: one ``serveprof serve`` on that base path for the whole session,
  model name ``tiny``, gRPC and REST on free loopback ports; ``.grpc_target``,
  ``.rest_url``, ``.pid``, ``.log_path``. Waits for AVAILABLE; always killed at the end.
- ``start_embedded_server``: a factory, ``server = start_embedded_server(base, *flags)``,
  for a server with its own model or flags; every server it started is killed at
  teardown, even when the test fails.

The process handling itself is in tests/fixtures/embedded_server.py.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.fixtures.embedded_server import TINY_MODEL_NAME, export_tiny_classifier_version, running_server


@pytest.fixture(scope="session")
def tiny_classifier_base(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tiny_classifier") / TINY_MODEL_NAME
    export_tiny_classifier_version(base / "1")
    return base


@pytest.fixture(scope="session")
def embedded_server(tiny_classifier_base, tmp_path_factory):
    with running_server(tiny_classifier_base, log_dir=tmp_path_factory.mktemp("embedded_server")) as server:
        yield server


@pytest.fixture
def start_embedded_server(tmp_path):
    """``server = start_embedded_server(base, *flags, rest=True, wait=True, model_name="tiny")``"""
    with contextlib.ExitStack() as stack:

        def start(base_path: Path, *flags: str, **options):
            return stack.enter_context(running_server(base_path, *flags, log_dir=tmp_path, **options))

        yield start
