"""What going through ``serveprof serve`` adds to calling the same signature in-process.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_server_overhead.py [--rounds 200] [--big-rounds 40]

Exports two models to a temporary directory, then for each case starts ``serveprof
serve`` as a real subprocess on free loopback ports and interleaves, round after round:
one in-process call of the loaded signature, one gRPC Predict, one REST predict. The
machine is shared and noisy, so the three are measured side by side in the same run
and compared by their medians.

Cases:
- ``small b1``: the tiny classifier (8x8x3 -> 3 classes) at batch 1: fixed costs.
- ``mnv2 b32``: Keras MobileNetV2(weights=None, alpha=0.35) at batch 32 of 224x224x3
  float32 (a 19 MB request): per-byte costs.

In-process baseline: ``signature(images=tensor)`` with the tensor built beforehand and
the output read with ``.numpy()``. Clients are prepared once, as serveprof's measurement
client does: the gRPC request is serialized once and sent as bytes (the official
PredictResponse parses the answer); the REST body is serialized once, the answer is
parsed with orjson. Everything else (the transport, the server's decoding, the
signature call, the response) is inside the timed through-server call.

A third row per case, ``gRPC floor``, times the same gRPC request against a bare grpcio
server (same options as serveprof's) that answers at once with a canned response: what
Python gRPC and the loopback cost before any serving work, i.e. the part of the
overhead the embedded server's own code cannot remove.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.embedded_server import running_server  # noqa: E402


def export_small(path: Path) -> None:
    from tests.fixtures.tiny_models import export_tiny_classifier

    export_tiny_classifier(path, image_size=8)


def export_mobilenet(path: Path, alpha: float) -> None:
    import keras
    import tensorflow as tf

    model = keras.applications.MobileNetV2(weights=None, alpha=alpha, input_shape=(224, 224, 3))

    class Serving(tf.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        @tf.function(input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="images")])
        def serve(self, images):
            return {"probabilities": self.wrapped(images, training=False)}

    module = Serving(model)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


class GrpcSender:
    def __init__(self, target: str, model: str, batch: np.ndarray):
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["images"].CopyFrom(tf.make_tensor_proto(batch))
        self.payload = request.SerializeToString()
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 1 << 30),
                                                              ("grpc.max_receive_message_length", 1 << 30)])
        self.call = self.channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                             response_deserializer=predict_pb2.PredictResponse.FromString)

    def __call__(self) -> np.ndarray:
        response = self.call(self.payload, timeout=120)
        tensor = response.outputs["probabilities"]
        return np.frombuffer(tensor.tensor_content, np.float32).reshape([d.size for d in tensor.tensor_shape.dim])

    def close(self) -> None:
        self.channel.close()


class RestSender:
    def __init__(self, url: str, model: str, batch: np.ndarray):
        import orjson
        import requests

        self.orjson = orjson
        self.session = requests.Session()
        self.url = f"{url}/v1/models/{model}:predict"
        self.body = orjson.dumps({"instances": batch}, option=orjson.OPT_SERIALIZE_NUMPY)

    def __call__(self) -> np.ndarray:
        answer = self.session.post(self.url, data=self.body, headers={"Content-Type": "application/json"}, timeout=300)
        answer.raise_for_status()
        return np.asarray(self.orjson.loads(answer.content)["predictions"], np.float32)

    def close(self) -> None:
        self.session.close()


def _floor_server(port: int, answer: bytes) -> None:
    """A grpcio server that answers every Predict with ``answer`` without looking at the request."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    from serveprof.server.grpc_api import grpc_server_options

    handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(lambda request, context: answer)})
    server = grpc.server(ThreadPoolExecutor(max_workers=4), options=grpc_server_options(1 << 30))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def transport_floor(model: str, batch: np.ndarray, expected: np.ndarray, rounds: int) -> list[float]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from tests.fixtures.embedded_server import free_port

    response = predict_pb2.PredictResponse()
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(expected))
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(target=_floor_server, args=(port, response.SerializeToString()),
                                                           daemon=True)
    process.start()
    try:
        send = GrpcSender(f"127.0.0.1:{port}", model, batch)
        grpc.channel_ready_future(send.channel).result(timeout=120)
        for _ in range(3):
            send()
        times = [timed(send)[0] for _ in range(rounds)]
        send.close()
        return times
    finally:
        process.kill()
        process.join()


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1e3, result


def run_case(label: str, base: Path, model: str, batch: np.ndarray, rounds: int, rest_every: int, log_dir: Path) -> list[dict]:
    import tensorflow as tf

    signature = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    tensor = tf.constant(batch)

    def in_process() -> np.ndarray:
        return signature(images=tensor)["probabilities"].numpy()

    with running_server(base, model_name=model, log_dir=log_dir) as server:
        senders = {"gRPC": GrpcSender(server.grpc_target, model, batch), "REST": RestSender(server.rest_url, model, batch)}
        try:
            expected = in_process()
            for name, send in senders.items():  # warm-up, and the answers must be the same
                for _ in range(3):
                    np.testing.assert_allclose(send(), expected, rtol=1e-4, atol=1e-6, err_msg=name)
                in_process()
            times: dict[str, list[float]] = {"in-process": [], "gRPC": [], "REST": []}
            paired: dict[str, list[float]] = {"in-process": []}
            for index in range(rounds):
                times["in-process"].append(timed(in_process)[0])
                times["gRPC"].append(timed(senders["gRPC"])[0])
                if index % rest_every == 0:
                    paired["in-process"].append(times["in-process"][-1])
                    times["REST"].append(timed(senders["REST"])[0])
        finally:
            for send in senders.values():
                send.close()
    floor = transport_floor(model, batch, expected, rounds)
    rows = []
    for protocol in ("gRPC", "REST"):
        # REST runs every rest_every rounds; it is compared with the in-process calls of those same rounds.
        base_ms = statistics.median(times["in-process"] if protocol == "gRPC" else paired["in-process"])
        server_ms = statistics.median(times[protocol])
        rows.append({"case": label, "protocol": protocol, "n": len(times[protocol]), "in_process_ms": base_ms,
                     "server_ms": server_ms, "overhead_ms": server_ms - base_ms,
                     "overhead_pct": 100 * (server_ms - base_ms) / base_ms, "ratio": server_ms / base_ms})
    floor_ms = statistics.median(floor)
    rows.append({"case": label, "protocol": "gRPC floor (bare grpcio, no model)", "n": len(floor), "in_process_ms": 0.0,
                 "server_ms": floor_ms, "overhead_ms": floor_ms, "overhead_pct": float("nan"), "ratio": float("nan")})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | protocol | n | in-process median ms | through server median ms | overhead ms | overhead % | ratio |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['case']} | {row['protocol']} | {row['n']} | {row['in_process_ms']:.3f} | {row['server_ms']:.3f} | "
                     f"{row['overhead_ms']:.3f} | {row['overhead_pct']:.1f} | {row['ratio']:.3f} |")
    return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="rounds for the batch-1 case")
    parser.add_argument("--big-rounds", type=int, default=40, help="rounds for the batch-32 case")
    parser.add_argument("--rest-every", type=int, default=4, help="REST runs every Nth round of the batch-32 case")
    parser.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier")
    parser.add_argument("--only", choices=["small", "mnv2"], help="run one case")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_server_") as scratch:
        root = Path(scratch)
        if args.only in (None, "small"):
            export_small(root / "small" / "1")
            batch = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
            rows += run_case("small b1", root / "small", "small", batch, args.rounds, 1, root)
        if args.only in (None, "mnv2"):
            export_mobilenet(root / "mnv2" / "1", args.alpha)
            batch = np.random.default_rng(0).random((32, 224, 224, 3), dtype=np.float32)
            rows += run_case(f"mnv2(alpha={args.alpha}) b32", root / "mnv2", "mnv2", batch, args.big_rounds,
                             args.rest_every, root)
    load_after = os.getloadavg()
    print(table(rows))
    print()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {cpu_model()}, {os.cpu_count()} cores; "
          f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}")
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
