"""The metrics page the server writes (TF Serving's format) and the client that reads any server's page.

No server here: the writer and the reader meet on text, including a page written the way
tensorflow_model_server writes it.
"""

from __future__ import annotations

import math

import pytest

from serveprof.client.server_metrics import parse, server_latency, startup_times
from serveprof.server.metrics import LATENCY_BUCKETS, Metrics

# Lines as util/prometheus_exporter.cc writes them (six significant digits, no HELP, "{}" without labels).
TF_SERVING_PAGE = """# TYPE :tensorflow:cc:saved_model:load_latency counter
:tensorflow:cc:saved_model:load_latency{model_path="/models/m/1"} 2345678
# TYPE :tensorflow:serving:batching_session:wrapped_run_count counter
:tensorflow:serving:batching_session:wrapped_run_count{} 7
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="10"} 0
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="18"} 0
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="32.4"} 4
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="58.32"} 10
:tensorflow:serving:request_latency_bucket{model_name="m",API="Predict",entrypoint="GRPC",le="+Inf"} 10
:tensorflow:serving:request_latency_sum{model_name="m",API="Predict",entrypoint="GRPC"} 350
:tensorflow:serving:request_latency_count{model_name="m",API="Predict",entrypoint="GRPC"} 10
"""


def test_a_tf_serving_page_is_read():
    snapshot = parse(TF_SERVING_PAGE)
    latency = server_latency(None, snapshot, "m")
    assert latency.count == 10 and latency.mean_ms == pytest.approx(0.035)
    # 5th of 10 values: in (32.4, 58.32], one of its six: 32.4 + 25.92/6 us.
    assert latency.p50_ms == pytest.approx((32.4 + 25.92 / 6) / 1e3)
    assert startup_times(snapshot).load_s == pytest.approx(2.345678)
    assert server_latency(None, snapshot, "other") is None


def test_the_servers_own_page_parses_and_places_values_as_tensorflow_does():
    metrics = Metrics()
    for micros in (5, 10, 11, 100, 100, 5000):
        metrics.request("tiny", "Predict", "GRPC", "OK", micros / 1e6)
    metrics.request("tiny", "Predict", "GRPC", "INVALID_ARGUMENT", 1.0)  # counted, not timed
    metrics.load("/m/1", 1.5, ok=True)
    metrics.warmup("/m/1", "OK", 0.25, 3)
    text = metrics.prometheus_text()
    assert ':tensorflow:serving:request_count{model_name="tiny",status="OK"} 6' in text
    assert ':tensorflow:serving:request_count{model_name="tiny",status="INVALID_ARGUMENT"} 1' in text
    assert 'le="10"} 1\n' in text and 'le="18"} 3\n' in text  # a value goes below its bucket's limit: 10 is not < 10
    assert "request_count_total" not in text and "# HELP" not in text  # no suffix added to counters
    snapshot = parse(text)
    latency = server_latency(None, snapshot, "tiny")
    assert latency.count == 6 and latency.mean_ms == pytest.approx(5226 / 6 / 1e3)
    times = startup_times(snapshot, "/m/1")
    assert (times.load_s, times.warmup_s, times.warmup_records) == (pytest.approx(1.5), pytest.approx(0.25), 3)


def test_latency_between_two_scrapes_counts_only_the_requests_in_between():
    metrics = Metrics()
    for _ in range(50):
        metrics.request("m", "Predict", "GRPC", "OK", 20e-6)
    before = parse(metrics.prometheus_text())
    for micros in range(1, 101):
        metrics.request("m", "Predict", "GRPC", "OK", micros * 100e-6)  # 0.1 .. 10 ms
    latency = server_latency(before, parse(metrics.prometheus_text()), "m")
    assert latency.count == 100
    assert latency.mean_ms == pytest.approx(5.05)
    # Within the 1.8x bucket that holds the true value.
    assert 5.0 / 1.8 <= latency.p50_ms <= 5.0 * 1.8
    assert 9.9 / 1.8 <= latency.p99_ms <= 9.9 * 1.8
    assert server_latency(parse(metrics.prometheus_text()), parse(metrics.prometheus_text()), "m") is None


def test_latency_buckets_are_tensorflows_exponential_ones():
    assert LATENCY_BUCKETS[:4] == (10, 18, 32.4, pytest.approx(58.32))
    assert len(LATENCY_BUCKETS) == 34 and LATENCY_BUCKETS[-1] > 1e300
    assert math.isclose(LATENCY_BUCKETS[32], 10 * 1.8**32)
