"""TF Serving's messages that tensorflow-serving-api does not ship, built from their .proto definitions.

``BatchingParameters`` (servables/tensorflow/session_bundle_config.proto),
``MonitoringConfig`` (config/monitoring_config.proto) and ``SerializedInput``
(apis/internal/serialized_input.proto) are declared here field for field, with the
same package, names and numbers, in a descriptor pool of their own. So the text files
tensorflow_model_server reads parse here with protobuf's own text_format, with the
same errors, and a newer tensorflow-serving-api that ships them cannot clash.
"""

from __future__ import annotations

import functools
from pathlib import Path

from serveprof.errors import ServeprofError

_PACKAGE = "tensorflow.serving"

# (message, [(field, number, type, label, type_name)]); type names as in descriptor.proto.
_MESSAGES = {
    "BatchingParameters": [
        ("max_batch_size", 1, "message", "optional", ".google.protobuf.Int64Value"),
        ("batch_timeout_micros", 2, "message", "optional", ".google.protobuf.Int64Value"),
        ("max_enqueued_batches", 3, "message", "optional", ".google.protobuf.Int64Value"),
        ("num_batch_threads", 4, "message", "optional", ".google.protobuf.Int64Value"),
        ("thread_pool_name", 5, "message", "optional", ".google.protobuf.StringValue"),
        ("allowed_batch_sizes", 6, "int64", "repeated", None),
        ("pad_variable_length_inputs", 7, "bool", "optional", None),
        ("enable_large_batch_splitting", 8, "message", "optional", ".google.protobuf.BoolValue"),
        ("max_execution_batch_size", 9, "message", "optional", ".google.protobuf.Int64Value"),
    ],
    "PrometheusConfig": [
        ("enable", 1, "bool", "optional", None),
        ("path", 2, "string", "optional", None),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, "message", "optional", ".tensorflow.serving.PrometheusConfig"),
    ],
    # input.proto's Input with every tensorflow.Example kept as its serialized bytes,
    # as TF Serving reads it (servables/tensorflow/util.cc, InputToSerializedExampleTensor).
    "SerializedExampleList": [
        ("examples", 1, "bytes", "repeated", None),
    ],
    "SerializedExampleListWithContext": [
        ("examples", 1, "bytes", "repeated", None),
        ("context", 2, "bytes", "optional", None),
    ],
    "SerializedInput": [
        ("example_list", 1, "message", "optional", ".tensorflow.serving.SerializedExampleList"),
        ("example_list_with_context", 2, "message", "optional", ".tensorflow.serving.SerializedExampleListWithContext"),
    ],
}
_ONEOFS = {"SerializedInput": ("kind", ("example_list", "example_list_with_context"))}


@functools.cache
def _classes() -> dict:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file = descriptor_pb2.FileDescriptorProto(
        name="serveprof/tf_serving_config.proto", package=_PACKAGE, syntax="proto3", dependency=[wrappers.name]
    )
    field_types = descriptor_pb2.FieldDescriptorProto
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        oneof_name, oneof_fields = _ONEOFS.get(name, (None, ()))
        if oneof_name:
            message.oneof_decl.add(name=oneof_name)
        for field_name, number, kind, label, type_name in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                type=getattr(field_types, f"TYPE_{kind.upper()}"),
                label=getattr(field_types, f"LABEL_{label.upper()}"),
            )
            if type_name:
                field.type_name = type_name
            if field_name in oneof_fields:
                field.oneof_index = 0
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _MESSAGES
    }


def message_class(name: str):
    """The generated class of ``tensorflow.serving.<name>`` (one of the messages above)."""
    return _classes()[name]


def parse_text_file(path: str | Path, name: str, flag: str):
    """Read a text-format ``tensorflow.serving.<name>`` as ``ParseProtoTextFile`` does, or say what is wrong."""
    from google.protobuf import text_format

    message = message_class(name)()
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ServeprofError(
            f"{flag}={path}: cannot read it ({error.strerror or error})",
            f"point {flag} at a readable text-format {name} file",
        ) from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        # TF Serving: "Invalid protobuf file: '<file>'", after protobuf's own line:column message.
        raise ServeprofError(
            f"Invalid protobuf file: '{path}' ({flag}): Error parsing text-format {_PACKAGE}.{name}: {error}",
            f"fix the line named above; the file holds a text-format {_PACKAGE}.{name}",
        ) from None
    return message
