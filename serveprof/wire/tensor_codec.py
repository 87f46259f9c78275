"""TensorProto <-> numpy without per-element Python work.

Requests normally carry ``tensor_content`` (raw little-endian bytes): that becomes an
ndarray with ``np.frombuffer`` (no copy). The typed repeated fields other clients send
(``float_val``, ``int_val``, ``string_val`` ...) are accepted too, with TensorFlow's
rule that a shorter list is padded with its last value; but a tensor that would be
padded to more than MAX_EXPANSION times the values it carries, and past
EXPANSION_FLOOR_BYTES, is refused before anything is allocated: TF Serving expands a
45-byte request into 256 MiB that way, and four at once took 5 GB here
(docs/reliability.md). Shapes numpy cannot hold (more than MAX_RANK dimensions, or
more than 2^63-1 bytes counting only the non-zero dimensions) are refused too, where
TensorFlow would accept some and fail later. A string tensor may also come as
``tensor_content``, in TensorFlow's string-list encoding.

Responses are written as TensorFlow writes them (tensor.cc): ``Tensor::AsProtoField``
fills the typed fields, ``Tensor::AsProtoTensorContent`` the raw bytes.
``tensor_bytes`` writes either straight to the wire: a packed ``float_val`` is the
array's own bytes behind a tag, and integers are varint-encoded with numpy, so no
value goes through Python one at a time.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import ml_dtypes
import numpy as np

from serveprof.wire.status import invalid_argument


@dataclass(frozen=True)
class DType:
    enum: int  # tensorflow.DataType number
    name: str  # TensorFlow's DataTypeString
    numpy: np.dtype
    field: str  # the TensorProto repeated field holding values of this type
    field_numpy: np.dtype  # how that field's values are held before a bit-cast to ``numpy``


def _dtype(enum, name, numpy, field, field_numpy=None) -> DType:
    numpy = np.dtype(numpy)
    return DType(enum, name, numpy, field, np.dtype(field_numpy) if field_numpy is not None else numpy)


# tensorflow/core/framework/types.proto numbers; fields as in tensor.proto.
DTYPES = {
    d.enum: d
    for d in (
        _dtype(1, "float", np.float32, "float_val"),
        _dtype(2, "double", np.float64, "double_val"),
        _dtype(3, "int32", np.int32, "int_val"),
        _dtype(4, "uint8", np.uint8, "int_val", np.int32),
        _dtype(5, "int16", np.int16, "int_val", np.int32),
        _dtype(6, "int8", np.int8, "int_val", np.int32),
        _dtype(7, "string", object, "string_val"),
        _dtype(8, "complex64", np.complex64, "scomplex_val", np.float32),
        _dtype(9, "int64", np.int64, "int64_val"),
        _dtype(10, "bool", np.bool_, "bool_val"),
        _dtype(14, "bfloat16", ml_dtypes.bfloat16, "half_val", np.int32),
        _dtype(17, "uint16", np.uint16, "int_val", np.int32),
        _dtype(18, "complex128", np.complex128, "dcomplex_val", np.float64),
        _dtype(19, "half", np.float16, "half_val", np.int32),
        _dtype(22, "uint32", np.uint32, "uint32_val"),
        _dtype(23, "uint64", np.uint64, "uint64_val"),
    )
}
STRING = 7
MAX_RANK = 64  # numpy's limit (TensorFlow's is 254)
MAX_EXPANSION = 16  # elements a typed-field tensor may describe per value it carries ...
EXPANSION_FLOOR_BYTES = 16 << 20  # ... once it describes more bytes than this
_INTP_MAX = (1 << 63) - 1
_BY_NUMPY = {d.numpy: d for d in DTYPES.values()}


def dtype_name(enum: int) -> str:
    known = DTYPES.get(enum)
    return known.name if known else f"<DataType {enum}>"


def dtype_of(array: np.ndarray) -> DType:
    found = _BY_NUMPY.get(array.dtype)
    if found is None:
        raise invalid_argument(f"cannot send a tensor of numpy type {array.dtype}")
    return found


def shape_of(shape_proto) -> tuple[int, ...]:
    """A request tensor's shape: fully known, every dimension >= 0."""
    if shape_proto.unknown_rank:
        raise invalid_argument("tensor parsing error: a request tensor must have a known rank (unknown_rank is set)")
    if len(shape_proto.dim) > MAX_RANK:
        raise invalid_argument(
            f"tensor parsing error: a shape of {len(shape_proto.dim)} dimensions; the embedded "
            f"server takes at most {MAX_RANK}"
        )
    dims = tuple([dim.size for dim in shape_proto.dim])
    if dims and min(dims) < 0:
        raise invalid_argument(f"tensor parsing error: shape {list(dims)} has a negative dimension")
    return dims


def to_ndarray(tensor, content=None, max_bytes: int = 1 << 62) -> np.ndarray:
    """The ndarray a request TensorProto describes.

    ``content`` is its tensor_content when the caller cut it out of the wire bytes
    itself (a memoryview; see predict_wire); otherwise ``tensor.tensor_content`` is used.
    The array may alias the request bytes and is then read-only.
    """
    dtype = DTYPES.get(tensor.dtype)
    if dtype is None:
        raise invalid_argument(f"tensor parsing error: data type {dtype_name(tensor.dtype)} is not supported")
    shape = shape_of(tensor.tensor_shape)
    count = math.prod(shape)
    itemsize = max(dtype.numpy.itemsize, 1)
    if math.prod(size for size in shape if size) * itemsize > _INTP_MAX:
        raise invalid_argument(
            f"tensor parsing error: shape {list(shape)} of {dtype.name} is too large to hold "
            "(more than 2^63-1 bytes, counting its non-zero dimensions)"
        )
    if count * itemsize > max_bytes:
        raise invalid_argument(
            f"tensor parsing error: shape {list(shape)} of {dtype.name} needs more than "
            f"--max_request_bytes={max_bytes} bytes"
        )
    if content is None:
        content = tensor.tensor_content
    if dtype.enum == STRING:
        if len(content):
            return _decode_string_list(content, shape, count)
        return _from_field(list(tensor.string_val), dtype, shape, count)
    if len(content):
        expected = count * dtype.numpy.itemsize
        if len(content) != expected:
            raise invalid_argument(
                f"tensor parsing error: tensor_content has {len(content)} bytes but shape "
                f"{list(shape)} of {dtype.name} needs {expected}"
            )
        return np.frombuffer(content, dtype=dtype.numpy.newbyteorder("<")).reshape(shape)
    values = getattr(tensor, dtype.field)
    carried = len(values) // (2 if dtype.field in ("scomplex_val", "dcomplex_val") else 1)
    if count * itemsize > EXPANSION_FLOOR_BYTES and count > MAX_EXPANSION * max(carried, 1):
        raise invalid_argument(
            f"tensor parsing error: shape {list(shape)} of {dtype.name} holds {count} values but "
            f"{dtype.field} carries {carried}; the embedded server pads a typed field at most "
            f"{MAX_EXPANSION}-fold past {EXPANSION_FLOOR_BYTES >> 20} MiB (send tensor_content, "
            "or every value)"
        )
    return _from_field(values, dtype, shape, count)


def _from_field(values, dtype: DType, shape: tuple[int, ...], count: int) -> np.ndarray:
    complex_pairs = dtype.field in ("scomplex_val", "dcomplex_val")
    flat = np.array(values, dtype=dtype.field_numpy if dtype.enum != STRING else object)
    if complex_pairs:
        if flat.size % 2:
            raise invalid_argument(f"tensor parsing error: {dtype.field} holds an odd number of values")
        flat = flat.view(dtype.numpy) if flat.size else np.zeros(0, dtype.numpy)
    elif dtype.numpy != dtype.field_numpy and dtype.enum != STRING:
        if dtype.field == "half_val":  # 16-bit patterns held in int32
            flat = flat.astype(np.uint16).view(dtype.numpy)
        else:
            info = np.iinfo(dtype.numpy)
            if flat.size and (flat.min() < info.min or flat.max() > info.max):
                raise invalid_argument(f"tensor parsing error: {dtype.field} has values out of range for {dtype.name}")
            flat = flat.astype(dtype.numpy)
    if flat.size > count:
        raise invalid_argument(
            f"tensor parsing error: {dtype.field} has {flat.size} values but shape {list(shape)} holds {count}"
        )
    if flat.size < count:
        # TensorFlow's Tensor::FromProto: missing values repeat the last one (zeros if none).
        fill = flat[-1] if flat.size else (b"" if dtype.enum == STRING else 0)
        padded = np.full(count, fill, dtype=dtype.numpy if dtype.enum != STRING else object)
        padded[: flat.size] = flat
        flat = padded
    return flat.reshape(shape)


def fill_tensor_proto(array: np.ndarray, tensor) -> None:
    """Write ``array`` into the (empty) TensorProto ``tensor`` as a request: tensor_content, strings in string_val."""
    dtype = dtype_of(array)
    tensor.dtype = dtype.enum
    dims = tensor.tensor_shape.dim
    for size in array.shape:
        dims.add().size = size
    if dtype.enum == STRING:
        tensor.string_val.extend(array.ravel().tolist())
    else:
        tensor.tensor_content = array.astype(dtype.numpy.newbyteorder("<"), copy=False).tobytes()


def _decode_string_list(content, shape: tuple[int, ...], count: int) -> np.ndarray:
    """TensorFlow's DecodeStringList: ``count`` varint lengths, then the strings back to back."""
    data = memoryview(content)
    lengths, pos = [], 0
    for _ in range(count):
        try:
            length, pos = read_varint(data, pos)
        except WireError:
            raise invalid_argument("tensor parsing error: tensor_content of a string tensor is truncated") from None
        lengths.append(length)
    if pos + sum(lengths) != len(data):
        raise invalid_argument(
            f"tensor parsing error: tensor_content of a string tensor holds {len(data)} bytes, "
            f"not the {pos + sum(lengths)} its {count} lengths announce"
        )
    array = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        array[index] = bytes(data[pos : pos + length])
        pos += length
    return array.reshape(shape)


# ------------------------------------------------------------ the wire form of responses


class WireError(ValueError):
    """Bytes that are not the protobuf encoding they claim to be."""


def read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position after it."""
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


_LENGTH_DELIMITED = 2
_TENSOR_SHAPE, _TENSOR_CONTENT = 2, 4
_FIELD_NUMBERS = {
    "float_val": 5,
    "double_val": 6,
    "int_val": 7,
    "string_val": 8,
    "scomplex_val": 9,
    "int64_val": 10,
    "bool_val": 11,
    "dcomplex_val": 12,
    "half_val": 13,
    "uint32_val": 16,
    "uint64_val": 17,
}
_FIXED_WIDTH = {"float_val", "double_val", "scomplex_val", "dcomplex_val"}
_SMALL = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varints(values: np.ndarray) -> bytes:
    """Protobuf varints of a whole integer array at once (negative values as 10 bytes, as int32/int64 fields do)."""
    wide = values.astype(np.int64, copy=False).view(np.uint64).ravel()
    if wide.size == 0:
        return b""
    shifts = np.arange(0, 70, 7, dtype=np.uint64)
    groups = (wide[:, None] >> shifts) & np.uint64(0x7F)  # [n, 10] seven-bit groups, low first
    bits = np.zeros(wide.size, dtype=np.int64)
    nonzero = wide != 0
    bits[nonzero] = np.floor(np.log2(wide[nonzero].astype(np.float64))).astype(np.int64) + 1
    # float64 rounds values near 2**k up; count the bits exactly where that could matter.
    big = wide >= np.uint64(1 << 52)
    if big.any():
        bits[big] = [int(value).bit_length() for value in wide[big]]
    lengths = np.maximum(1, (bits + 6) // 7)
    keep = np.arange(10)[None, :] < lengths[:, None]
    more = np.arange(10)[None, :] < (lengths - 1)[:, None]
    encoded = (groups | (more.astype(np.uint64) << np.uint64(7))).astype(np.uint8)
    return encoded[keep].tobytes()


def _field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | _LENGTH_DELIMITED) + varint(len(payload)) + payload


def _shape_bytes(shape: tuple[int, ...]) -> bytes:
    dims = b"".join(_field(2, b"\x08" + varint(size)) if size else _field(2, b"") for size in shape)
    return _field(_TENSOR_SHAPE, dims)


@functools.lru_cache(maxsize=256)
def _tensor_head(dtype_enum: int, shape: tuple[int, ...]) -> bytes:
    return b"\x08" + varint(dtype_enum) + _shape_bytes(shape)


def tensor_parts(array: np.ndarray, tensor_content: bool) -> list[bytes]:
    """A serialized TensorProto of ``array`` in pieces to be joined: tensor_content (AsProtoTensorContent) or
    typed fields (AsProtoField). The payload is one piece, so a caller can frame it without copying it again."""
    dtype = dtype_of(array)
    head = _tensor_head(dtype.enum, array.shape)
    if dtype.enum == STRING:
        values = [value if isinstance(value, bytes) else str(value).encode() for value in array.ravel().tolist()]
        if tensor_content:  # EncodeStringList: every length, then every string
            payload = b"".join(varint(len(value)) for value in values) + b"".join(values)
            return [head, _field(_TENSOR_CONTENT, payload)] if payload else [head]
        return [head, *(_field(_FIELD_NUMBERS["string_val"], value) for value in values)]
    little = array.astype(dtype.numpy.newbyteorder("<"), copy=False)
    if array.size == 0:
        return [head]
    if tensor_content:
        number, payload = _TENSOR_CONTENT, little.tobytes()
    elif dtype.field in _FIXED_WIDTH:
        number, payload = _FIELD_NUMBERS[dtype.field], little.tobytes()  # packed floats are the values' own bytes
    elif dtype.field == "half_val":  # 16-bit patterns as int32 varints
        number, payload = _FIELD_NUMBERS[dtype.field], varints(little.view(np.uint16))
    elif dtype.numpy == np.bool_:
        number, payload = _FIELD_NUMBERS[dtype.field], little.view(np.uint8).tobytes()
    else:
        number, payload = _FIELD_NUMBERS[dtype.field], varints(little)
    return [head, varint(number << 3 | _LENGTH_DELIMITED) + varint(len(payload)), payload]


def tensor_bytes(array: np.ndarray, tensor_content: bool) -> bytes:
    """A serialized TensorProto of ``array`` (see tensor_parts)."""
    return b"".join(tensor_parts(array, tensor_content))
