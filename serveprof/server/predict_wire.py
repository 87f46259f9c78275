"""PredictRequest and PredictResponse on the wire: decoded without copying tensor payloads, encoded directly.

Parsing with ``PredictRequest.FromString`` copies every ``tensor_content`` into the
protobuf arena, and reading the field copies it again into a new ``bytes``: two full
copies of a 19 MB batch before TensorFlow even sees it. Instead the request's wire bytes
are walked field by field (a handful of fields, never per element), once the request is
larger than a few tens of kilobytes; each input's
``tensor_content`` is kept as a memoryview into the request bytes, and everything else
(model_spec, output_filter, the tensors' dtype and shape, typed value fields) is handed
to the real protobuf parser, which therefore still validates it.

A response is written straight as bytes: each output's TensorProto comes from
``tensor_codec.tensor_bytes`` (typed fields or tensor_content, as the flag says), so a
batch's floats are copied once into the answer instead of going value by value
through protobuf's repeated fields.
"""

from __future__ import annotations

import functools

import numpy as np
from google.protobuf.message import DecodeError

from serveprof.wire.status import invalid_argument
from serveprof.wire.tensor_codec import WireError, read_varint, tensor_parts, varint

_INPUTS = 2  # PredictRequest.inputs (map<string, TensorProto>)
_TENSOR_CONTENT = 4  # TensorProto.tensor_content
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
SMALL_REQUEST_BYTES = 64 << 10  # below this, protobuf's own parser beats walking the fields (docs/server.md)


def _fields(data: memoryview):
    """Yield (field number, wire type, start of the field, start of its payload, end)."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == _VARINT:
            _, end = read_varint(data, pos)
        elif wire_type == _FIXED64:
            end = pos + 8
        elif wire_type == _FIXED32:
            end = pos + 4
        elif wire_type == _LENGTH:
            length, pos = read_varint(data, pos)
            end = pos + length
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if end > len(data):
            raise WireError("field runs past the end of the message")
        yield number, wire_type, start, pos, end
        pos = end


@functools.cache
def _protos():
    """The message modules, imported on first use (they pull in TensorFlow), then kept."""
    from tensorflow.core.framework import tensor_pb2
    from tensorflow_serving.apis import predict_pb2

    return tensor_pb2, predict_pb2


def decode_predict_request(raw: bytes):
    """Return ``(request, inputs)``: a PredictRequest with everything but its inputs, and
    ``{name: (TensorProto without tensor_content, tensor_content memoryview)}``."""
    tensor_pb2, predict_pb2 = _protos()
    if len(raw) <= SMALL_REQUEST_BYTES:
        # Copying a few kilobytes costs less than walking the fields in Python.
        try:
            request = predict_pb2.PredictRequest.FromString(bytes(raw))
        except DecodeError as error:
            raise invalid_argument(f"Could not parse the PredictRequest: {error}") from None
        return request, {name: (tensor, None) for name, tensor in request.inputs.items()}
    data = memoryview(raw)
    try:
        other_fields, entries = [], {}
        for number, wire_type, start, payload, end in _fields(data):
            if number == _INPUTS and wire_type == _LENGTH:
                name, tensor_parts = _map_entry(data[payload:end])
                entries[name] = tensor_parts  # a repeated key replaces the earlier entry, as protobuf maps do
            else:
                other_fields.append(data[start:end])
        request = predict_pb2.PredictRequest.FromString(b"".join(other_fields))
        inputs = {}
        for name, parts in entries.items():
            content, meta = b"", []
            for part in parts:  # the value messages of one key, concatenated = merged
                for number, wire_type, start, payload, end in _fields(part):
                    if number == _TENSOR_CONTENT and wire_type == _LENGTH:
                        content = part[payload:end]  # last one wins, as for any bytes field
                    else:
                        meta.append(part[start:end])
            inputs[name] = (tensor_pb2.TensorProto.FromString(b"".join(meta)), content)
    except (WireError, DecodeError) as error:
        raise invalid_argument(f"Could not parse the PredictRequest: {error}") from None
    return request, inputs


def payload_offset(raw, inputs: dict) -> int | None:
    """Where in ``raw`` the largest ``tensor_content`` of ``inputs`` (as decoded above) begins; None if none was cut out."""
    contents = [content for _, content in inputs.values() if content is not None and len(content)]
    if not contents:
        return None
    largest = max(contents, key=len)
    return np.frombuffer(largest, np.uint8).ctypes.data - np.frombuffer(raw, np.uint8).ctypes.data


def _map_entry(entry: memoryview) -> tuple[str, list[memoryview]]:
    name, values = b"", []
    for number, wire_type, _, payload, end in _fields(entry):
        if number == 1 and wire_type == _LENGTH:
            name = entry[payload:end]
        elif number == 2 and wire_type == _LENGTH:
            values.append(entry[payload:end])
    try:
        return bytes(name).decode("utf-8"), values
    except UnicodeDecodeError:
        raise WireError("an input name is not valid UTF-8") from None


def _length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | _LENGTH) + varint(len(payload)) + payload


@functools.lru_cache(maxsize=64)
def model_spec_bytes(name: str, signature_name: str, version: int | None) -> bytes:
    """A serialized ModelSpec as MakeModelSpec fills it (name, version, signature name)."""
    out = _length_delimited(1, name.encode("utf-8"))
    if version is not None:
        out += _length_delimited(2, b"\x08" + varint(version & 0xFFFFFFFFFFFFFFFF))
    return out + _length_delimited(3, signature_name.encode("utf-8"))


def encode_predict_response(outputs: dict, model_spec: bytes, tensor_content: bool) -> bytes:
    """A serialized PredictResponse: ``outputs`` (alias -> ndarray) and ``model_spec`` (serialized).

    Each map entry is framed around its tensor's pieces, so the payload is copied once, by the final join.
    """
    parts = []
    for alias, array in outputs.items():
        tensor = tensor_parts(array, tensor_content)
        size = sum(len(part) for part in tensor)
        key = alias.encode("utf-8")
        entry_head = b"\x0a" + varint(len(key)) + key + b"\x12" + varint(size)  # key = 1, value = 2
        parts += [b"\x0a", varint(len(entry_head) + size), entry_head, *tensor]  # outputs = 1
    parts.append(_length_delimited(2, model_spec))
    return b"".join(parts)
