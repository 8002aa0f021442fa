"""HTTP/2 frames and gRPC's wire format as plain functions and values, with no connection state: frame
building, header blocks (HPACK), length-prefixed messages, `grpc-timeout`, percent-encoded `grpc-message`.
The connection state machine that uses them is grpc_http2.py."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple
from urllib.parse import quote

import hpack

from .h2_flood import FloodLimits, table_size_updates
from .status import ServingError

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE = range(9)
CONTINUATION = 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20


class ErrorCode(IntEnum):
    """RFC 9113 7 (the ones we send)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    FLOW_CONTROL_ERROR = 0x3
    FRAME_SIZE_ERROR = 0x6
    STREAM_CLOSED = 0x5
    REFUSED_STREAM = 0x7
    COMPRESSION_ERROR = 0x9
    ENHANCE_YOUR_CALM = 0xB


class Setting(IntEnum):
    """RFC 9113 6.5.2 (the ones we send or read)."""

    MAX_CONCURRENT_STREAMS = 0x3
    INITIAL_WINDOW_SIZE = 0x4
    MAX_FRAME_SIZE = 0x5
    MAX_HEADER_LIST_SIZE = 0x6


MAX_WINDOW = 2**31 - 1  # RFC 9113 6.9.1
DEFAULT_WINDOW = 65535  # RFC 9113 6.5.2, until SETTINGS say otherwise
DEFAULT_FRAME_SIZE = 16384
LARGEST_FRAME_SIZE = (1 << 24) - 1

FRAME_HEAD = struct.Struct(">BHBBI")  # length (24 bits as 8 + 16), type, flags, stream id
FRAME_HEAD_SIZE = 9
MESSAGE_PREFIX_SIZE = 5  # gRPC: [compressed flag][4-byte length]
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
# grpc-message is percent-encoded outside printable ASCII, and '%' itself
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")
_WBITS = {b"gzip": 31, b"deflate": 15}


class H2Error(Exception):
    """A connection error (RFC 9113 5.4.1): the connection sends GOAWAY with `code` and closes."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------------------------- frames
def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def setting_pairs(pairs: Iterable[tuple[int, int]]) -> bytes:
    return b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in pairs)


def unpad(flags: int, payload: bytes) -> bytes:
    if not flags & PADDED:
        return payload
    if not payload or payload[0] >= len(payload):
        raise H2Error(ErrorCode.PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - payload[0]]


# ----------------------------------------------------------------------------------------- header blocks
def hpack_int(value: int, prefix_bits: int, first: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK "literal header field without indexing" with a new name: leaves both tables alone."""
    return b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value


RESPONSE_HEADERS = b"\x88" + literal(b"content-type", b"application/grpc")  # 0x88: ":status: 200"
OK_TRAILERS = literal(b"grpc-status", b"0")
# frame headers minus the stream id, for the two header blocks every answer sends
HEAD_PREFIX = len(RESPONSE_HEADERS).to_bytes(3, "big") + bytes((HEADERS, END_HEADERS))
TRAILERS_PREFIX = len(OK_TRAILERS).to_bytes(3, "big") + bytes((HEADERS, END_STREAM | END_HEADERS))


def status_block(err: ServingError) -> bytes:
    """A Trailers-Only answer's header block: :status 200, content-type, grpc-status, grpc-message."""
    block = RESPONSE_HEADERS + literal(b"grpc-status", str(err.code_number).encode())
    if err.message:
        block += literal(b"grpc-message", quote(err.message, safe=_MESSAGE_SAFE).encode("ascii"))
    return block


def http_status_block(status: int) -> bytes:
    """A header block of `:status` alone (static table entry 8's name, the value a literal)."""
    return b"\x08" + hpack_int(3, 7) + str(status).encode()


class RequestHead(NamedTuple):
    """What a gRPC call needs from its request headers."""

    path: str
    method: bytes
    content_type: bytes
    encoding: bytes
    timeout: float | None  # seconds, from grpc-timeout
    error: str = ""  # a header the call cannot run with (a malformed grpc-timeout): answered on its stream
    malformed: str = ""  # a header block RFC 9113 forbids: the stream is reset with PROTOCOL_ERROR
    content_length: int = -1  # -1: not given; -2: not a number


REQUEST_PSEUDO = (b":method", b":scheme", b":path", b":authority")
CONNECTION_HEADERS = (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade")


def malformed(headers: list[tuple[bytes, bytes]], trailers: bool = False) -> str:
    """Why a header block is malformed (RFC 9113 8.2-8.3), or "": uppercase names, unknown, response,
    repeated or late pseudo-headers, connection-specific fields, TE other than trailers, missing or empty
    :method / :scheme / :path; in trailers, any pseudo-header."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name != name.lower():
            return f"uppercase header name {name[:40]!r}"
        if name.startswith(b":"):
            if trailers or regular or name not in REQUEST_PSEUDO or name in seen:
                return f"misplaced, unknown or repeated pseudo-header {name[:40]!r}"
            seen.add(name)
        else:
            regular = True
            if name in CONNECTION_HEADERS or (name == b"te" and value != b"trailers"):
                return f"connection-specific header {name[:40]!r}"
    if trailers:
        return ""
    missing = [p.decode() for p in REQUEST_PSEUDO[:3] if p not in seen]
    if missing:
        return f"missing {', '.join(missing)}"
    if any(name == b":path" and not value for name, value in headers):
        return "empty :path"
    return ""


def request_head(headers: Iterable[tuple[bytes, bytes]]) -> RequestHead:
    path, method, content_type, encoding, timeout = "", b"", b"", b"identity", None
    error = ""
    headers = list(headers)
    bad = malformed(headers)
    length = -1
    for name, value in headers:
        if name == b"content-length":
            length = int(value) if value.isdigit() else -2
        elif name == b":path":
            path = value.decode("latin-1")
        elif name == b":method":
            method = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            timeout = parse_timeout(value)
            if timeout is None:
                error = f"Invalid grpc-timeout {value[:20]!r} (1 to 8 digits and a unit: H M S m u n)"
        elif name == b"grpc-encoding":
            encoding = value
    return RequestHead(path, method, content_type, encoding, timeout, error, bad, length)


MAX_TABLE_SIZE_UPDATES = FloodLimits().max_table_size_updates


class HeaderDecoder:
    """hpack.Decoder plus a cache: clients send the same header block call after call, and a block that
    leaves the dynamic table as it was decodes to the same headers until the table changes."""

    def __init__(self, max_header_list: int, cache_entries: int) -> None:
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = max_header_list
        self.cache: dict[bytes, RequestHead] = {}
        self.cache_entries = cache_entries

    def decode(self, block: bytes) -> RequestHead:
        head = self.cache.get(block)
        if head is not None:
            return head
        if table_size_updates(block, MAX_TABLE_SIZE_UPDATES) > MAX_TABLE_SIZE_UPDATES:  # each costs a resize
            raise H2Error(ErrorCode.COMPRESSION_ERROR, "more than two HPACK table size updates in a block")
        table = self.decoder.header_table
        newest, size = (table.dynamic_entries[0] if table.dynamic_entries else None), table.maxsize
        try:
            head = request_head(self.decoder.decode(block, raw=True))
        except hpack.HPACKError as exc:
            self.cache.clear()
            raise H2Error(ErrorCode.COMPRESSION_ERROR, f"bad header block: {exc}") from exc
        if (table.dynamic_entries[0] if table.dynamic_entries else None) is newest and table.maxsize == size:
            if len(self.cache) < self.cache_entries:
                self.cache[block] = head  # the table did not change: safe to reuse
        else:
            self.cache.clear()  # indices moved: every cached block may now decode differently
        return head


def parse_timeout(value: bytes) -> float | None:
    """grpc-timeout ("1S", "250m", ...) in seconds; None when malformed. The gRPC spec allows 1 to 8 ASCII
    digits: a longer one used to overflow the deadline arithmetic, and a bad one must fail only its own
    call, never the connection."""
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not 1 <= len(digits) <= 8 or not all(48 <= c <= 57 for c in digits):
        return None
    return int(digits) * unit


# -------------------------------------------------------------------------------------------- messages
def message_length(prefix: bytes | bytearray) -> int:
    """The length a gRPC message's 5-byte prefix announces."""
    return int.from_bytes(prefix[1:MESSAGE_PREFIX_SIZE], "big")


def length_prefixed(message: bytes) -> bytes:
    """One uncompressed gRPC message on the wire."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def unary_message(body: bytearray, encoding: bytes, limit: int) -> bytes:
    """The one message of a unary request body: [compressed flag][length][bytes], decompressed."""
    if len(body) < MESSAGE_PREFIX_SIZE:
        raise ServingError("INTERNAL", "The request has no message (unary methods take exactly one)")
    length = message_length(body)
    if len(body) != MESSAGE_PREFIX_SIZE + length:
        raise ServingError("INTERNAL", "Unary methods take exactly one request message")
    payload = bytes(body[MESSAGE_PREFIX_SIZE:])
    if not body[0]:
        return payload
    wbits = _WBITS.get(encoding)
    if wbits is None:
        if encoding == b"identity":
            raise ServingError("INTERNAL", "Compressed message without a grpc-encoding")
        raise ServingError("UNIMPLEMENTED", f"Compression {encoding.decode('latin-1')!r} is not supported")
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(payload, limit + 1)
    except zlib.error as exc:
        raise ServingError("INTERNAL", f"Could not decompress the request: {exc}") from exc
    if len(out) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"Received message larger than max (> {limit} decompressed)")
    return out
