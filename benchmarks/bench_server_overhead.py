"""What going through ``serveprof serve`` adds to a Session run of the same SavedModel in-process.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/bench_server_overhead.py [--rounds 200] [--big-rounds 40]

Exports two models to a temporary directory, then for each case starts two ``serveprof
serve`` subprocesses on free loopback ports, one answering Predict in typed fields (TF
Serving's default) and one with ``--enable_serialization_as_tensor_content``, and
interleaves, round after round: one in-process Session run, one gRPC Predict on each
server (and through grpcio's client on the first), one REST predict. The machine is
shared and noisy, so they are measured side by side in the same run and compared by
their medians.

Cases:
- ``small b1``: the tiny classifier (8x8x3 -> 3 classes) at batch 1: fixed costs.
- ``mnv2 b32``: Keras MobileNetV2(weights=None, alpha=1.0 by default) at batch 32 of 224x224x3
  float32 (a 19 MB request): per-byte costs.

In-process baseline: the engine TF Serving runs, on its fastest path from Python: the
SavedModel loaded with TensorFlow's Session loader (``tf.compat.v1.saved_model.loader.load``)
and run through a callable made once for the signature's feed and fetch
(``Session::MakeCallable``/``RunCallable``), the input array built beforehand, in a
process of its own (as the server has one), timed around the run. Through the server:
exactly what the pipeline times,
``client.send(prepared)`` of serveprof's measuring clients (``GrpcClient``, whose
Predict goes over its lean HTTP/2 transport, and ``RestClient``), with the request
serialized once beforehand. Everything else (the transport, the server's decoding, the
signature call, the response) is inside the timed call. Each client's answer is checked
against TensorFlow's before timing. ``gRPC via grpcio`` sends the same bytes through a
grpcio channel, for comparison.

The ``not 64-byte aligned`` row sends, before each timed request, the same request with
the version in its ModelSpec, which moves its tensor 4 bytes on; the server places each
message so that the tensor lies where the last request of its method had it, so the
timed request's tensor is then not aligned, and TensorFlow copies it before the run, as
it did for every request before that placement.

The ``floor`` rows time the same gRPC requests against the embedded server's gRPC
transport (``serveprof.server.grpc_http2``) answering at once with a canned response:
what the client, the transport and the loopback cost before any serving work.

``--keep-awake`` keeps every CPU awake (``measure.keep_awake``, serveprof/measure/awake.py)
for the whole benchmark, baseline and servers alike; the footer says whether it was on (the
spinners then count in the load average after).
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

from serveprof.client import GrpcClient  # noqa: E402
from serveprof.measure.awake import awake_if  # noqa: E402
from serveprof.server.predict_wire import SMALL_REQUEST_BYTES  # noqa: E402
from tests.fixtures.embedded_server import running_server  # noqa: E402


def export_small(path: Path) -> None:
    from tests.fixtures.tiny_models import export_tiny_classifier

    export_tiny_classifier(path, image_size=8)


def export_mobilenet(path: Path, alpha: float) -> None:
    """As serveprof export writes a Keras model (keras.export.ExportArchive), output renamed ``probabilities``."""
    import keras
    import tensorflow as tf

    model = keras.applications.MobileNetV2(weights=None, alpha=alpha, input_shape=(224, 224, 3))
    archive = keras.export.ExportArchive()
    archive.add_endpoint(
        name="serving_default",
        fn=lambda images: {"probabilities": model(images, training=False)},
        input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32, name="images")],
    )
    archive.write_out(str(path), verbose=False)


def _session_worker(connection, version_dir: str, batch: np.ndarray) -> None:
    """The in-process baseline, in a process of its own: the SavedModel in a Session, one callable for
    serving_default's feed and fetch; each message asks for one run and gets back its time and output."""
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, ["serve"], version_dir)
    signature = meta_graph.signature_def["serving_default"]
    run = session._make_callable_from_options(
        config_pb2.CallableOptions(
            feed=[signature.inputs["images"].name], fetch=[signature.outputs["probabilities"].name]
        )
    )
    connection.send("ready")
    while connection.recv():
        started = time.perf_counter()
        output = run(batch)[0]
        connection.send(((time.perf_counter() - started) * 1e3, output))


class SessionRun:
    """Session runs in a separate process, so the benchmark's own clients and threads share no process with it,
    as they share none with the server; the time is taken around the run itself."""

    def __init__(self, version_dir: Path, batch: np.ndarray):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_session_worker, args=(child, str(version_dir), batch), daemon=True)
        self.process.start()
        if self.connection.recv() != "ready":
            raise RuntimeError("the in-process baseline did not start")

    def run(self) -> tuple[float, np.ndarray]:
        self.connection.send(True)
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(False)
        self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()


def make_senders(
    grpc_target: str, rest_url: str | None, model: str, batch: np.ndarray, content_target: str | None = None
) -> dict:
    """Prepared requests on serveprof's measuring clients (what the pipeline times), and on grpcio for reference."""
    from serveprof.client import RestClient

    clients = {
        "gRPC": GrpcClient(grpc_target, model, timeout_s=300),
        "gRPC via grpcio": GrpcClient(grpc_target, model, timeout_s=300, transport="library"),
    }
    if content_target:
        clients["gRPC, tensor_content"] = GrpcClient(content_target, model, timeout_s=300)
    if rest_url:
        clients["REST"] = RestClient(rest_url, model, timeout_s=300)
    senders = {}
    for name, client in clients.items():
        prepared = client.prepare({"images": batch})
        client.connect()
        senders[name] = Sender(client, prepared)
    return senders


class Sender:
    def __init__(self, client, prepared: bytes):
        self.client, self.prepared = client, prepared

    def __call__(self) -> bytes:
        return self.client.send(self.prepared)

    def close(self) -> None:
        self.client.close()


def _floor_server(port: int, answer: bytes) -> None:
    """The embedded server's gRPC transport, answering every Predict with ``answer`` without looking at the request."""
    import time as clock

    from serveprof.server.grpc_http2 import GrpcServer

    server = GrpcServer(
        {"/tensorflow.serving.PredictionService/Predict": lambda request: answer},
        "127.0.0.1",
        port,
        max_workers=4,
        max_message_bytes=1 << 30,
    )
    server.start()
    while True:
        clock.sleep(3600)


def transport_floor(model: str, batch: np.ndarray, expected: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """The same gRPC requests against the embedded server's transport answering at once, with no model."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from tests.fixtures.embedded_server import free_port

    response = predict_pb2.PredictResponse()
    response.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(expected))
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=_floor_server, args=(port, response.SerializeToString()), daemon=True
    )
    process.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                senders = make_senders(f"127.0.0.1:{port}", None, model, batch)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        for send in senders.values():
            for _ in range(3):
                send()
        times: dict[str, list[float]] = {name: [] for name in senders}
        for _ in range(rounds):
            for name, send in senders.items():
                times[name].append(timed(send)[0])
        for send in senders.values():
            send.close()
        return times
    finally:
        process.kill()
        process.join()


UNALIGNED = "gRPC, typed fields, tensor not 64-byte aligned"


def timed(call) -> tuple[float, object]:
    started = time.perf_counter()
    result = call()
    return (time.perf_counter() - started) * 1e3, result


def run_case(
    label: str, base: Path, model: str, batch: np.ndarray, rounds: int, rest_every: int, log_dir: Path
) -> list[dict]:
    baseline = SessionRun(base / "1", batch)

    def in_process() -> np.ndarray:
        return baseline.run()[1]

    # REST's idle keep-alive ends after --rest_api_timeout_in_ms, and a connection's first request must come within
    # --handshake_timeout_ms (10 s); the warm-up of the other clients, before REST's first request, can take longer.
    with (
        running_server(
            base, "--rest_api_timeout_in_ms=600000", "--handshake_timeout_ms=600000", model_name=model, log_dir=log_dir
        ) as server,
        running_server(
            base, "--enable_serialization_as_tensor_content", model_name=model, rest=False, log_dir=log_dir
        ) as content_server,
    ):
        senders = make_senders(server.grpc_target, server.rest_url, model, batch, content_server.grpc_target)
        unaligned = None
        try:
            expected = in_process()
            for name, send in senders.items():  # warm-up, and the answers must be TensorFlow's
                for _ in range(3):
                    send()
                    in_process()
                outputs = send.client.predict({"images": batch})["probabilities"]
                np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-6, err_msg=name)
            times: dict[str, list[float]] = {"in-process": [], **{name: [] for name in senders}}
            if batch.nbytes > SMALL_REQUEST_BYTES:
                # The same request, but with the version in its ModelSpec: its tensor starts 4 bytes later.
                shifted = GrpcClient(server.grpc_target, model, version=1, timeout_s=300)
                shifted.connect()
                unaligned = Sender(shifted, shifted.prepare({"images": batch}))
                times[UNALIGNED] = []
            paired: list[float] = []
            for index in range(rounds):
                times["in-process"].append(baseline.run()[0])
                times["gRPC"].append(timed(senders["gRPC"])[0])
                times["gRPC via grpcio"].append(timed(senders["gRPC via grpcio"])[0])
                times["gRPC, tensor_content"].append(timed(senders["gRPC, tensor_content"])[0])
                if unaligned is not None:
                    unaligned()  # its tensor lies 4 bytes further on, so the next request's is placed wrongly
                    times[UNALIGNED].append(timed(senders["gRPC"])[0])
                if index % rest_every == 0:
                    paired.append(times["in-process"][-1])
                    times["REST"].append(timed(senders["REST"])[0])
        finally:
            for send in senders.values():
                send.close()
            if unaligned is not None:
                unaligned.close()
            baseline.close()
    floors = transport_floor(model, batch, expected, rounds)
    names = {"gRPC": "gRPC, typed fields (TF Serving's default)", "gRPC via grpcio": "gRPC via grpcio, typed fields"}
    rows = []
    for protocol in [*senders, *([UNALIGNED] if UNALIGNED in times else [])]:
        # REST runs every rest_every rounds; it is compared with the in-process calls of those same rounds.
        base_ms = statistics.median(paired if protocol == "REST" else times["in-process"])
        server_ms = statistics.median(times[protocol])
        rows.append(
            {
                "case": label,
                "protocol": names.get(protocol, protocol),
                "n": len(times[protocol]),
                "in_process_ms": base_ms,
                "server_ms": server_ms,
                "overhead_ms": server_ms - base_ms,
                "overhead_pct": 100 * (server_ms - base_ms) / base_ms,
                "ratio": server_ms / base_ms,
            }
        )
    for protocol, floor in floors.items():
        floor_ms = statistics.median(floor)
        rows.append(
            {
                "case": label,
                "protocol": f"{protocol} floor (transport only, canned answer)",
                "n": len(floor),
                "in_process_ms": float("nan"),
                "server_ms": floor_ms,
                "overhead_ms": floor_ms,
                "overhead_pct": float("nan"),
                "ratio": float("nan"),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| case | protocol | n | in-process median ms | through server median ms | overhead ms | overhead % | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['protocol']} | {row['n']} | {row['in_process_ms']:.3f} | {row['server_ms']:.3f} | "
            f"{row['overhead_ms']:.3f} | {row['overhead_pct']:.1f} | {row['ratio']:.3f} |"
        )
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
    parser.add_argument("--alpha", type=float, default=1.0, help="MobileNetV2 width multiplier")
    parser.add_argument("--only", choices=["small", "mnv2"], help="run one case")
    parser.add_argument(
        "--keep-awake", action="store_true", help="a SCHED_IDLE spinner on every CPU throughout (measure.keep_awake)"
    )
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    load_before = os.getloadavg()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_server_") as scratch, awake_if(args.keep_awake) as awake:
        root = Path(scratch)
        if args.only in (None, "small"):
            export_small(root / "small" / "1")
            batch = np.random.default_rng(0).random((1, 8, 8, 3), dtype=np.float32)
            rows += run_case("small b1", root / "small", "small", batch, args.rounds, 1, root)
        if args.only in (None, "mnv2"):
            export_mobilenet(root / "mnv2" / "1", args.alpha)
            batch = np.random.default_rng(0).random((32, 224, 224, 3), dtype=np.float32)
            rows += run_case(
                f"mnv2(alpha={args.alpha}) b32", root / "mnv2", "mnv2", batch, args.big_rounds, args.rest_every, root
            )
    load_after = os.getloadavg()
    print(table(rows))
    print()
    print(
        f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {cpu_model()}, {os.cpu_count()} cores; "
        f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
        f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}; keep awake: "
        + (
            f"CPUs {','.join(map(str, awake['cpus']))}, cpu_dma_latency held {awake['cpu_dma_latency']}"
            if awake
            else "off"
        )
    )
    print("command:", " ".join([Path(sys.executable).name, *sys.argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
