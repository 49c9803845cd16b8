"""Order-preserving (memcomparable) byte encodings for keys and index values.

Owns the byte layout of everything RocksDB sorts: entity keys, index values, and the
inverted commit timestamp that makes newer versions sort first. Imports nothing from
the rest of zonestore and knows nothing of protobuf: callers hand it plain Python values.

Every encoding here is *prefix-free* (self-delimiting): no encoded value is a proper
prefix of another. That is what lets a key be a concatenation of fields, lets a
commit timestamp be appended after a user key without two keys ever interleaving,
and lets a descending index column be the bitwise inverse of its ascending bytes.

Byte layout::

    escaped string   s.replace(00, 00 FF) ++ 00 01          (sorts like s, prefix-free)
    int64            8 bytes big-endian, sign bit flipped    (sorts numerically)
    double           8 bytes: IEEE bits, sign flipped if +, all bits inverted if -
    partition        esc(project) esc(database) esc(namespace)
    path             { 01 esc(kind) (00 int64 id | 01 uint64 id | 02 esc(name)) }* 00
                     (a parent sorts before its children; ids before names; a negative
                     id takes tag 00 and int64's encoding, so it sorts before every
                     positive id while positive ids keep the bytes they always had)
    entity key       partition ++ path                       ("encoded" key)
    versioned key    encoded ++ uint64be(2**64 - 1 - commit_ts) (newest first)

    index value      one type tag, then the value, in Datastore's cross-type order:
      05                    null
      10 int64 sub          integer (sub=00) and timestamp in us (sub=01), interleaved by value
      20 | 21               boolean false | true
      30 esc(bytes) sub     blob (sub=00) and UTF-8 string (sub=01), interleaved by bytes
      40 double             double (NaN first, then -inf .. +inf)
      50 double double      geo point: latitude, then longitude
      60 partition path     key
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence

PathElement = tuple[str, int | str]
"""(kind, id) or (kind, name): an id is a non-zero int, a name a non-empty str."""

_INT = struct.Struct(">Q")
_DOUBLE = struct.Struct(">d")
_SIGN = 1 << 63
_U64_MAX = (1 << 64) - 1

TAG_NULL = 0x05
TAG_INT = 0x10
TAG_BOOL = 0x20
TAG_BYTES = 0x30
TAG_DOUBLE = 0x40
TAG_GEO = 0x50
TAG_KEY = 0x60

SUB_INTEGER = 0x00
SUB_TIMESTAMP = 0x01
SUB_BLOB = 0x00
SUB_STRING = 0x01

TS_SUFFIX_LEN = 8


class DecodeError(ValueError):
    """Bytes that no encoder here produced."""


def escape(raw: bytes) -> bytes:
    return raw.replace(b"\x00", b"\x00\xff") + b"\x00\x01"


@functools.lru_cache(maxsize=4096)
def escape_str(text: str) -> bytes:
    """`escape` of a UTF-8 string, memoized: kinds, property names and partitions
    repeat on every entity of a workload (names and ids do not: use `escape`)."""
    return escape(text.encode())


def unescape(buf: bytes, pos: int) -> tuple[bytes, int]:
    """Decode an escaped string starting at `pos`; returns (raw, position after it)."""
    out = bytearray()
    while True:
        end = buf.find(b"\x00", pos)
        if end < 0 or end + 1 >= len(buf):
            raise DecodeError("unterminated escaped string")
        out += buf[pos:end]
        marker = buf[end + 1]
        if marker == 0x01:
            return bytes(out), end + 2
        if marker != 0xFF:
            raise DecodeError("bad escape byte")
        out.append(0)
        pos = end + 2


def encode_int(value: int) -> bytes:
    return _INT.pack((value + _SIGN) & _U64_MAX)


def decode_int(buf: bytes, pos: int) -> int:
    return int(_INT.unpack_from(buf, pos)[0]) - _SIGN


def encode_double(value: float) -> bytes:
    if value != value:  # NaN sorts before every other double, as Datastore orders it
        return b"\x00" * 8
    bits = int(_INT.unpack(_DOUBLE.pack(value))[0])
    if bits & _SIGN:
        bits ^= _U64_MAX
    else:
        bits |= _SIGN
    return _INT.pack(bits)


def decode_double(buf: bytes, pos: int) -> float:
    bits = int(_INT.unpack_from(buf, pos)[0])
    if bits == 0:
        return float("nan")
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _U64_MAX
    return float(_DOUBLE.unpack(_INT.pack(bits))[0])


@functools.lru_cache(maxsize=1024)
def encode_partition(project: str, database: str, namespace: str) -> bytes:
    return escape_str(project) + escape_str(database) + escape_str(namespace)


def encode_path(path: Sequence[PathElement]) -> bytes:
    parts = []
    for kind, ident in path:
        parts.append(b"\x01")
        parts.append(escape_str(kind))
        if isinstance(ident, int):
            parts.append(b"\x01" + _INT.pack(ident) if ident >= 0 else b"\x00" + encode_int(ident))
        else:
            parts.append(b"\x02" + escape(ident.encode()))
    parts.append(b"\x00")
    return b"".join(parts)


def encode_path_prefix(path: Sequence[PathElement]) -> bytes:
    """The bytes every descendant of `path` (and `path` itself) starts with."""
    return encode_path(path)[:-1]


def decode_path(buf: bytes, pos: int) -> tuple[tuple[PathElement, ...], int]:
    path: list[PathElement] = []
    while True:
        if pos >= len(buf):
            raise DecodeError("unterminated path")
        marker = buf[pos]
        if marker == 0x00:
            return tuple(path), pos + 1
        if marker != 0x01:
            raise DecodeError("bad path marker")
        kind, pos = unescape(buf, pos + 1)
        id_tag = buf[pos]
        if id_tag == 0x01:
            path.append((kind.decode(), int(_INT.unpack_from(buf, pos + 1)[0])))
            pos += 9
        elif id_tag == 0x00:
            path.append((kind.decode(), decode_int(buf, pos + 1)))
            pos += 9
        elif id_tag == 0x02:
            name, pos = unescape(buf, pos + 1)
            path.append((kind.decode(), name.decode()))
        else:
            raise DecodeError("bad path id tag")


def encode_key(project: str, database: str, namespace: str, path: Sequence[PathElement]) -> bytes:
    return encode_partition(project, database, namespace) + encode_path(path)


def decode_key(buf: bytes, pos: int = 0) -> tuple[str, str, str, tuple[PathElement, ...], int]:
    project, pos = unescape(buf, pos)
    database, pos = unescape(buf, pos)
    namespace, pos = unescape(buf, pos)
    path, pos = decode_path(buf, pos)
    return project.decode(), database.decode(), namespace.decode(), path, pos


def versioned(encoded: bytes, commit_ts: int) -> bytes:
    """The RocksDB key of one version: newer versions sort first."""
    return encoded + _INT.pack(_U64_MAX - commit_ts)


def split_versioned(raw: bytes) -> tuple[bytes, int]:
    """(encoded user key, commit_ts) of a versioned key."""
    return raw[:-TS_SUFFIX_LEN], _U64_MAX - int(_INT.unpack_from(raw, len(raw) - 8)[0])


def prefix_end(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with `prefix`."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\xff" * (len(prefix) + 9)
    return stripped[:-1] + bytes([stripped[-1] + 1])


# Index values ----------------------------------------------------------------


def value_null() -> bytes:
    return b"\x05"


def value_int(value: int) -> bytes:
    return b"\x10" + encode_int(value) + b"\x00"


def value_timestamp(micros: int) -> bytes:
    return b"\x10" + encode_int(micros) + b"\x01"


def value_bool(value: bool) -> bytes:
    return b"\x21" if value else b"\x20"


def value_blob(value: bytes) -> bytes:
    return b"\x30" + escape(value) + b"\x00"


def value_string(value: str) -> bytes:
    return b"\x30" + escape(value.encode()) + b"\x01"


def value_double(value: float) -> bytes:
    return b"\x40" + encode_double(value)


def value_geo(latitude: float, longitude: float) -> bytes:
    return b"\x50" + encode_double(latitude) + encode_double(longitude)


def value_key(project: str, database: str, namespace: str, path: Sequence[PathElement]) -> bytes:
    return b"\x60" + encode_key(project, database, namespace, path)


IndexScalar = (
    None
    | bool
    | int
    | float
    | str
    | bytes
    | tuple[str, int]  # ("ts", micros)
    | tuple[str, float, float]  # ("geo", lat, lng)
    | tuple[str, str, str, str, tuple[PathElement, ...]]  # ("key", project, db, ns, path)
)


def decode_value(buf: bytes, pos: int) -> tuple[IndexScalar, int]:
    """Decode one index value. Timestamps, geo points and keys come back as tagged tuples."""
    tag = buf[pos]
    pos += 1
    if tag == TAG_NULL:
        return None, pos
    if tag == TAG_INT:
        number = decode_int(buf, pos)
        sub = buf[pos + 8]
        return (("ts", number) if sub == SUB_TIMESTAMP else number), pos + 9
    if tag in (TAG_BOOL, TAG_BOOL + 1):
        return tag == TAG_BOOL + 1, pos
    if tag == TAG_BYTES:
        raw, pos = unescape(buf, pos)
        sub = buf[pos]
        return (raw.decode() if sub == SUB_STRING else raw), pos + 1
    if tag == TAG_DOUBLE:
        return decode_double(buf, pos), pos + 8
    if tag == TAG_GEO:
        return ("geo", decode_double(buf, pos), decode_double(buf, pos + 8)), pos + 16
    if tag == TAG_KEY:
        project, database, namespace, path, pos = decode_key(buf, pos)
        return ("key", project, database, namespace, path), pos
    raise DecodeError(f"unknown index value tag {tag:#x}")


def skip_value(buf: bytes, pos: int) -> int:
    return decode_value(buf, pos)[1]


def invert(raw: bytes) -> bytes:
    """Descending order for a prefix-free encoding: invert every byte."""
    return bytes(255 - b for b in raw)
