"""The LevelDB log format: how a managed export frames its records (`output-N` files and
the `*.overall_export_metadata` file).

The file is a sequence of 32 KiB blocks (the last one may be short). A record is split
into fragments that never cross a block boundary; each fragment has a 7-byte header:

    +----------------+-------------+---------+------------------+
    | masked CRC32C  | length      | type    | payload          |
    | 4 bytes, LE    | 2 bytes, LE | 1 byte  | `length` bytes   |
    +----------------+-------------+---------+------------------+

    type: 1 FULL (a whole record), 2 FIRST, 3 MIDDLE, 4 LAST (the pieces of one)
    CRC32C over the type byte and the payload, masked: rotr(crc, 15) + 0xa282ead8

When fewer than 7 bytes are left in a block they are zero-filled and the next fragment
starts on the next block; with exactly 7 left, a zero-length FIRST fragment is written
there (as LevelDB's writer does, so files are byte-identical to Google's).

The reader is strict: a bad checksum, a fragment that runs past its block or the end of
the file, or fragments out of order raise `CorruptRecord` naming the byte offset of the
record's first header. Imports nothing of zonestore.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<IHB")
_TYPE_BYTES = [bytes([t]) for t in range(256)]


class CorruptRecord(Exception):
    """A record that cannot be read; `offset` is the byte offset of its first header."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"{reason} (record at byte offset {offset})")
        self.offset = offset
        self.reason = reason


def mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def fragment_crc(record_type: int, payload: bytes) -> int:
    crc = google_crc32c.value(_TYPE_BYTES[record_type])
    return mask(google_crc32c.extend(crc, payload))


class Writer:
    """Appends records to a binary stream; `offset` is the number of bytes written."""

    def __init__(self, out: BinaryIO, offset: int = 0) -> None:
        self.out = out
        self.offset = offset

    def write(self, record: bytes) -> int:
        """Frame and write one record; returns the byte offset where it starts."""
        start = self.offset
        view = record
        pos = 0
        first = True
        parts: list[bytes] = []
        while True:
            left_in_block = BLOCK_SIZE - self.offset % BLOCK_SIZE
            if left_in_block < HEADER_SIZE:
                parts.append(b"\x00" * left_in_block)
                self.offset += left_in_block
                left_in_block = BLOCK_SIZE
            avail = left_in_block - HEADER_SIZE
            n = min(avail, len(view) - pos)
            last = pos + n == len(view)
            if first and last:
                kind = FULL
            elif first:
                kind = FIRST
            elif last:
                kind = LAST
            else:
                kind = MIDDLE
            payload = view[pos : pos + n]
            parts.append(_HEADER.pack(fragment_crc(kind, payload), n, kind))
            parts.append(payload)
            self.offset += HEADER_SIZE + n
            pos += n
            first = False
            if last:
                break
        self.out.write(b"".join(parts))
        return start


def read_records(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Yields (offset, record) for every record of the stream, reading a block at a time.

    Raises CorruptRecord at the first damaged or truncated record."""
    block_start = 0
    pending: list[bytes] = []
    pending_offset = -1
    while True:
        block = stream.read(BLOCK_SIZE)
        if not block:
            break
        pos = 0
        size = len(block)
        while size - pos >= HEADER_SIZE:
            offset = block_start + pos
            crc, length, kind = _HEADER.unpack_from(block, pos)
            if crc == 0 and length == 0 and kind == 0:
                # Zero-filled space (a preallocated or padded tail): nothing follows in it.
                if any(block[pos:]):
                    raise CorruptRecord(offset, "a zero header followed by data")
                pos = size
                break
            end = pos + HEADER_SIZE + length
            if end > size:
                where = pending_offset if pending else offset
                if size < BLOCK_SIZE:
                    raise CorruptRecord(where, "the file ends inside a record (truncated)")
                raise CorruptRecord(where, "a fragment runs past its block")
            payload = block[pos + HEADER_SIZE : end]
            if fragment_crc(kind, payload) != crc:
                raise CorruptRecord(
                    pending_offset if pending else offset, "checksum mismatch (corrupted data)"
                )
            if kind == FULL:
                if pending:
                    raise CorruptRecord(pending_offset, "a record without its LAST fragment")
                yield offset, payload
            elif kind == FIRST:
                if pending:
                    raise CorruptRecord(pending_offset, "a record without its LAST fragment")
                pending = [payload]
                pending_offset = offset
            elif kind in (MIDDLE, LAST):
                if not pending:
                    raise CorruptRecord(offset, "a fragment without its FIRST")
                pending.append(payload)
                if kind == LAST:
                    yield pending_offset, b"".join(pending)
                    pending = []
            else:
                raise CorruptRecord(offset, f"unknown fragment type {kind}")
            pos = end
        if pos < size:
            tail = block[pos:]
            if any(tail):
                raise CorruptRecord(
                    pending_offset if pending else block_start + pos,
                    "the file ends inside a record header (truncated)",
                )
        block_start += size
        if size < BLOCK_SIZE:
            break
    if pending:
        raise CorruptRecord(pending_offset, "the file ends inside a record (truncated)")
