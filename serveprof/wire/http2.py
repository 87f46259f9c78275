"""HTTP/2 framing for unary gRPC, shared by the embedded server and the measuring client.

Only what gRPC over HTTP/2 needs (RFC 9113, RFC 7541, grpc/doc/PROTOCOL-HTTP2.md):
frames read off a socket with their padding and priority fields removed and header
blocks reassembled from CONTINUATION frames; header blocks written as HPACK literals
that are never indexed (stateless: the same fields are the same bytes every time);
header blocks read through hpack's Decoder, which keeps the connection's table.
"""

from __future__ import annotations

import struct
from urllib.parse import unquote

from hpack import Decoder

from serveprof.wire.sockets import send_all

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM, FLAG_ACK, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
(
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
) = range(1, 7)
# RFC 9113 §7 error codes.
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB
DEFAULT_WINDOW = 65_535
DEFAULT_MAX_FRAME = 16_384
MAX_WINDOW = (1 << 31) - 1
LARGEST_FRAME = (1 << 24) - 1
MAX_HEADER_BLOCK = 64 * 1024  # a whole header block, CONTINUATION frames included
MAX_CONTINUATIONS = 16  # per header block: 64 KiB in 4 KiB frames; more (empty ones too) is a flood
HEADER_TABLE_SIZE = 4096  # RFC 7541's default, the most a peer's HPACK table may hold here
DECODED_BLOCKS_KEPT = 16  # per connection, each at most DECODED_BLOCK_BYTES
DECODED_BLOCK_BYTES = 1024

# grpc/include/grpcpp/impl/codegen/status_code_enum.h, by number.
STATUS_NAMES = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


class Http2Error(Exception):
    """The peer broke HTTP/2 (RFC 9113 §5.4.1 connection error): GOAWAY carrying ``code``, then close."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def frame_header(length: int, kind: int, flags: int, stream: int) -> bytes:
    return struct.pack(">I", length)[1:] + bytes((kind, flags)) + struct.pack(">I", stream)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return frame_header(len(payload), kind, flags, stream) + payload


def hpack_int(value: int, prefix_bits: int, first_byte: int = 0) -> bytes:
    """RFC 7541 §5.1 integer with an N-bit prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first_byte | value,))
    out = bytearray((first_byte | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal_never_indexed(name: bytes, value: bytes) -> bytes:
    """RFC 7541 §6.2.2 with a new name and no Huffman coding: decodable without any state."""
    return b"\x10" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


def header_block(fields) -> bytes:
    return b"".join(literal_never_indexed(name, value) for name, value in fields)


def grpc_message_encode(text: str) -> bytes:
    """The grpc-message value: UTF-8, with bytes outside printable ASCII and '%' percent-encoded."""
    return b"".join(
        bytes((byte,)) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte for byte in text.encode("utf-8")
    )


def grpc_message_decode(value: str) -> str:
    return unquote(value, errors="replace")


def grpc_prefix(length: int) -> bytes:
    """The 5 bytes before a gRPC message on the wire: not compressed, then its length."""
    return b"\x00" + struct.pack(">I", length)


def data_frame(stream: int, prefix: bytes, message: memoryview, sent: int, count: int, flags: int = 0) -> list:
    """The buffers of one DATA frame with bytes ``sent`` to ``sent + count`` of ``prefix + message``, copying none."""
    buffers = [frame_header(count, DATA, flags, stream)]
    if sent < len(prefix):
        buffers.append(prefix[sent : min(len(prefix), sent + count)])
    start, end = max(sent - len(prefix), 0), sent + count - len(prefix)
    if end > start:
        buffers.append(message[start:end])
    return buffers


def unpad(payload, flags: int):
    """A DATA or HEADERS payload without its padding (and the pad length byte)."""
    if not flags & FLAG_PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise Http2Error(PROTOCOL_ERROR, "a padded frame is shorter than its padding")
    return payload[1 : len(payload) - payload[0]]


class FrameSocket:
    """A socket read as HTTP/2 frames and written with ``sendmsg``."""

    def __init__(self, sock):
        self.sock = sock
        self._buffer = bytearray()
        self._position = 0

    def read_exact(self, count: int) -> bytearray:
        buffer, position = self._buffer, self._position
        if len(buffer) - position < count:
            del buffer[:position]
            position = 0
            while len(buffer) < count:
                chunk = self.sock.recv(max(count - len(buffer), 262_144))
                if not chunk:
                    raise EOFError("the peer closed the connection")
                buffer += chunk
        self._position = position + count
        return buffer[position : position + count]

    def read_into(self, view: memoryview) -> None:
        """Fill ``view`` from the stream: what is buffered first, the rest straight from the socket (no copy)."""
        buffered = min(len(self._buffer) - self._position, len(view))
        if buffered:
            view[:buffered] = self._buffer[self._position : self._position + buffered]
            self._position += buffered
        filled = buffered
        while filled < len(view):
            received = self.sock.recv_into(view[filled:])
            if not received:
                raise EOFError("the peer closed the connection")
            filled += received

    def skip(self, count: int) -> None:
        while count:
            step = min(count, 1 << 20)
            self.read_exact(step)
            count -= step

    def read_frame_header(self) -> tuple[int, int, int, int]:
        """``(length, type, flags, stream)`` of the next frame; its payload is still to be read."""
        header = self.read_exact(9)
        return int.from_bytes(header[:3], "big"), header[3], header[4], int.from_bytes(header[5:9], "big") & 0x7FFFFFFF

    def read_frame(self) -> tuple[int, int, int, bytearray]:
        """``(type, flags, stream, payload)`` of the next frame."""
        length, kind, flags, stream = self.read_frame_header()
        return kind, flags, stream, self.read_exact(length) if length else bytearray()

    def read_header_block(self, flags: int, stream: int, payload, max_bytes: int = MAX_HEADER_BLOCK) -> bytes:
        """The whole header block a HEADERS frame starts, with its CONTINUATION frames read."""
        payload = unpad(payload, flags)
        if flags & FLAG_PRIORITY:
            payload = payload[5:]
        parts, size = [payload], len(payload)
        while not flags & FLAG_END_HEADERS:
            length, kind, flags, more_stream = self.read_frame_header()
            if kind != CONTINUATION or more_stream != stream:
                raise Http2Error(PROTOCOL_ERROR, "a header block was not continued by a CONTINUATION frame")
            size += length
            if size > max_bytes:
                raise Http2Error(FRAME_SIZE_ERROR, f"a header block of more than {max_bytes} bytes")
            if len(parts) > MAX_CONTINUATIONS:
                raise Http2Error(
                    ENHANCE_YOUR_CALM, f"a header block in more than {MAX_CONTINUATIONS} CONTINUATION frames"
                )
            parts.append(self.read_exact(length))
        return bytes(b"".join(parts))

    def send(self, buffers) -> None:
        send_all(self.sock, buffers)


class HeaderDecoder:
    """hpack's Decoder, with the result of a block that leaves the HPACK table as it was kept for reuse.

    Every block must be decoded in order to keep the table in step with the peer's. A
    peer repeats the same block for every call once its fields are in the table, and
    hpack's pure-Python decoding is otherwise a fifth of a small call's cost. A block's
    result depends only on the table, and the table changes only through blocks that
    add entries or resize it (RFC 7541 §6.2.1, §6.3), which ``changes_table`` spots
    without decoding; such a block empties the store. The store holds at most
    DECODED_BLOCKS_KEPT blocks of at most DECODED_BLOCK_BYTES, and the table itself at
    most HEADER_TABLE_SIZE, so a connection's HPACK state stays a few KiB.
    """

    def __init__(self, max_header_list_size: int = 65_536):
        self._decoder = Decoder(max_header_list_size=max_header_list_size)
        self._decoder.max_allowed_table_size = HEADER_TABLE_SIZE
        self._decoded: dict[bytes, list] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        block = bytes(block)
        cached = self._decoded.get(block)
        if cached is not None:
            return cached
        headers = self._decoder.decode(block)
        if changes_table(block):
            self._decoded.clear()
        elif len(block) <= DECODED_BLOCK_BYTES:
            if len(self._decoded) >= DECODED_BLOCKS_KEPT:
                self._decoded.clear()
            self._decoded[block] = headers
        return headers


def changes_table(block: bytes) -> bool:
    """Whether an HPACK block adds to or resizes the dynamic table; True if it cannot be read."""
    position, end = 0, len(block)
    try:
        while position < end:
            first = block[position]
            if first & 0x80:  # indexed field (§6.1)
                position = _skip_int(block, position, 7)
            elif first & 0xC0 == 0x40 or first & 0xE0 == 0x20:  # incremental indexing (§6.2.1), size update (§6.3)
                return True
            else:  # literal without indexing or never indexed (§6.2.2, §6.2.3)
                new_name = first & 0x0F == 0
                position = _skip_int(block, position, 4)
                if new_name:
                    position = _skip_string(block, position)
                position = _skip_string(block, position)
    except IndexError:
        return True
    return position != end


def _read_int(block: bytes, position: int, prefix_bits: int) -> tuple[int, int]:
    limit = (1 << prefix_bits) - 1
    value = block[position] & limit
    position += 1
    if value < limit:
        return value, position
    shift = 0
    while True:
        byte = block[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            raise IndexError("an HPACK integer that long is not a header")


def _skip_int(block: bytes, position: int, prefix_bits: int) -> int:
    return _read_int(block, position, prefix_bits)[1]


def _skip_string(block: bytes, position: int) -> int:
    length, position = _read_int(block, position, 7)
    return position + length


def parse_grpc_timeout(value: str) -> float | None:
    """A grpc-timeout header (PROTOCOL-HTTP2.md: up to 8 digits and a unit) in seconds; None if malformed."""
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit() or not value[:-1].isascii():
        return None
    unit = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}.get(value[-1])
    return int(value[:-1]) * unit if unit is not None else None
