"""Server-side batching, warm-up and the Prometheus page, on real ``serveprof serve`` processes.

One server batches with max_batch_size 4, allowed sizes 2 and 4, a 1 s timeout and room
for one waiting batch, so each rule of TF Serving's BatchingSession shows in one
request pattern: a full batch runs at once, a lone request waits for the timeout and
is padded, a task that does not fit a full queue is refused UNAVAILABLE, and one larger
than a batch INVALID_ARGUMENT. Its model carries warm-up records, replayed (through the
batching) before the ports open.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests

from serveprof.client.server_metrics import histogram, parse, startup_times
from tests.fixtures.embedded_server import REPO, TFSERVING_TESTDATA, TINY_IMAGE_SIZE, running_server, server_env

TIMEOUT_S = 60
BATCHING = """max_batch_size { value: 4 }
batch_timeout_micros { value: 1000000 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
"""


def write_warmup(version_dir, *batch_sizes: int) -> None:
    code = (
        "import sys; from serveprof.models.warmup_records import write_warmup_records; "
        "write_warmup_records(sys.argv[1], [int(size) for size in sys.argv[2:]])"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(version_dir), *map(str, batch_sizes)],
        check=True,
        cwd=REPO,
        env=server_env(),
        timeout=300,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def batching_server(tiny_classifier_base, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("batching")
    base = scratch / "tiny"
    shutil.copytree(tiny_classifier_base, base)
    write_warmup(base / "1", 1, 4)
    (scratch / "batching.txt").write_text(BATCHING)
    (scratch / "monitoring.txt").write_text('prometheus_config { enable: true path: "/metrics" }\n')
    with running_server(
        base,
        "--enable_batching",
        f"--batching_parameters_file={scratch / 'batching.txt'}",
        f"--monitoring_config_file={scratch / 'monitoring.txt'}",
        log_dir=scratch,
    ) as server:
        yield server


@pytest.fixture(scope="module")
def reference(tf, tiny_classifier_base):
    signature = tf.saved_model.load(str(tiny_classifier_base / "1")).signatures["serving_default"]
    return lambda batch: signature(images=tf.constant(batch))["probabilities"].numpy()


@pytest.fixture(scope="module")
def tf():
    import tensorflow

    return tensorflow


def images(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), dtype=np.float32)


def predict(target: str, batch: np.ndarray, timeout: float = TIMEOUT_S):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
    with grpc.insecure_channel(target) as channel:
        return tf.make_ndarray(
            prediction_service_pb2_grpc.PredictionServiceStub(channel)
            .Predict(request, timeout=timeout)
            .outputs["probabilities"]
        )


def page(server):
    return parse(requests.get(f"{server.rest_url}/metrics", timeout=TIMEOUT_S).text)


def counter(snapshot, family: str, **labels) -> float:
    return sum(value for _, value in snapshot.samples(family, **labels))


def processed(snapshot) -> dict[str, float]:
    """Executions per batch size (the padding histogram is labelled by the size executed)."""
    return {
        labels["execution_batch_size"]: value
        for labels, value in snapshot.samples(":tensorflow:serving:batching_session:padding_size", "_count")
    }


def test_warmup_is_replayed_before_the_model_is_available(batching_server):
    log = batching_server.log()
    assert "Number of warmup records read: 2" in log
    assert log.index("Finished reading warmup data") < log.index("is AVAILABLE") < log.index("Running gRPC ModelServer")
    assert "startup timings: load_s=" in log and "warmup_records=2" in log
    times = startup_times(page(batching_server))
    assert times.warmup_records == 2 and times.load_s > 0
    # The batch-1 record waited for the 1 s batch timeout: warm-up goes through the batching, as in TF Serving.
    assert times.warmup_s >= 1.0


def test_concurrent_requests_are_merged_into_one_batch_and_split_back(batching_server, reference):
    before = page(batching_server)
    batches = [images(1, seed) for seed in range(4)]
    answers: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(4)

    def call(index: int) -> None:
        barrier.wait()
        answers[index] = predict(batching_server.grpc_target, batches[index])

    threads = [threading.Thread(target=call, args=(index,)) for index in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert time.monotonic() - started < 1.0, "a full batch runs at once, without waiting for the timeout"
    for index, batch in enumerate(batches):
        np.testing.assert_allclose(answers[index], reference(batch), rtol=1e-5, atol=1e-7)
    after = page(batching_server)
    runs = ":tensorflow:serving:batching_session:wrapped_run_count"
    assert counter(after, runs) - counter(before, runs) == 1
    assert processed(after).get("4", 0) - processed(before).get("4", 0) == 1


def test_a_lone_request_waits_for_the_timeout_and_is_padded_to_an_allowed_size(batching_server, reference):
    before = page(batching_server)
    batch = images(3, seed=7)
    started = time.monotonic()
    answer = predict(batching_server.grpc_target, batch)
    assert time.monotonic() - started >= 0.9
    assert answer.shape == (3, 3)  # the padding row is dropped
    np.testing.assert_allclose(answer, reference(batch), rtol=1e-5, atol=1e-7)
    after = page(batching_server)
    padding = histogram(after, ":tensorflow:serving:batching_session:padding_size", execution_batch_size="4")
    earlier = histogram(before, ":tensorflow:serving:batching_session:padding_size", execution_batch_size="4")
    assert padding.minus(earlier).total == 1  # one row of padding, 3 -> 4


def test_a_full_queue_answers_unavailable_and_an_oversized_task_invalid_argument(batching_server):
    waiting = threading.Thread(target=predict, args=(batching_server.grpc_target, images(3, seed=1)))
    waiting.start()  # sits in the open batch for the 1 s timeout
    time.sleep(0.3)
    with pytest.raises(grpc.RpcError) as caught:
        predict(batching_server.grpc_target, images(2, seed=2))  # 3 + 2 > 4, and one batch may wait
    waiting.join(TIMEOUT_S)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == (
        "The batch scheduling queue to which this task was submitted is full; "
        "currently 1 batches enqueued and max_enqueued_batches is 1"
    )
    with pytest.raises(grpc.RpcError) as caught:
        predict(batching_server.grpc_target, images(5, seed=3))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Task size 5 is larger than maximum input batch size 4"
    status = ":tensorflow:serving:request_count"
    snapshot = page(batching_server)
    assert counter(snapshot, status, model_name="tiny", status="UNAVAILABLE") >= 1
    assert counter(snapshot, status, model_name="tiny", status="INVALID_ARGUMENT") >= 1


def test_rest_requests_join_the_same_batches(batching_server, reference):
    batch = images(2, seed=11)
    started = time.monotonic()
    answer = requests.post(
        f"{batching_server.rest_url}/v1/models/tiny:predict", json={"instances": batch.tolist()}, timeout=TIMEOUT_S
    )
    assert answer.status_code == 200, answer.text
    assert time.monotonic() - started >= 0.9  # waited for the timeout in the batch queue
    np.testing.assert_allclose(np.array(answer.json()["predictions"]), reference(batch), rtol=1e-5, atol=1e-6)
    latency = histogram(
        page(batching_server),
        ":tensorflow:serving:request_latency",
        model_name="tiny",
        API="predict",
        entrypoint="REST",
    )
    assert latency.count >= 1 and latency.total >= 0.9e6


def test_a_warmup_file_that_is_not_a_tfrecord_fails_the_start(tmp_path):
    base = tmp_path / "half"
    shutil.copytree(TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu", base)
    extra = base / "00000123" / "assets.extra"
    extra.mkdir()
    (extra / "tf_serving_warmup_requests").write_bytes(b"this is not a TFRecord file at all")
    with pytest.raises(AssertionError) as caught:
        with running_server(base, model_name="default", log_dir=tmp_path):
            pass
    assert "Please verify your warmup data is in TFRecord format" in str(caught.value)
    with running_server(base, "--enable_model_warmup=false", model_name="default", log_dir=tmp_path) as server:
        assert "read warmup data" not in server.log() and "warmup_records=0" in server.log()
