"""The LevelDB log framing: round trips of any records (hypothesis), the block layout
LevelDB's writer produces, and damage that the reader must name by offset."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonestore_node.export import records

BLOCK = records.BLOCK_SIZE


def frame(items: list[bytes]) -> bytes:
    out = io.BytesIO()
    writer = records.Writer(out)
    for item in items:
        writer.write(item)
    assert writer.offset == len(out.getvalue())
    return out.getvalue()


def read_all(data: bytes) -> list[tuple[int, bytes]]:
    return list(records.read_records(io.BytesIO(data)))


def sized(n: int, pattern: bytes) -> bytes:
    """n bytes repeating a drawn pattern (large records without drawing every byte)."""
    return (pattern * (n // len(pattern) + 1))[:n]


record_lists = st.lists(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda n, b: b * n,
            st.integers(BLOCK - 40, BLOCK + 40),
            st.binary(min_size=1, max_size=1),
        ),
        st.builds(sized, st.integers(0, 3 * BLOCK), st.binary(min_size=1, max_size=64)),
    ),
    max_size=12,
)


@settings(max_examples=40)
@given(record_lists)
def test_any_records_read_back_as_written_with_their_offsets(items: list[bytes]) -> None:
    data = frame(items)
    got = read_all(data)
    assert [record for _, record in got] == items
    offsets = [offset for offset, _ in got]
    assert offsets == sorted(offsets)


@given(record_lists)
def test_no_fragment_crosses_a_block_and_headers_check_out(items: list[bytes]) -> None:
    data = frame(items)
    pos = 0
    while pos < len(data):
        left = BLOCK - pos % BLOCK
        if left < records.HEADER_SIZE:
            assert data[pos : pos + left] == b"\x00" * left  # the zero-filled trailer
            pos += left
            continue
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        assert kind in (records.FULL, records.FIRST, records.MIDDLE, records.LAST)
        assert records.HEADER_SIZE + length <= left
        payload = data[pos + 7 : pos + 7 + length]
        assert records.unmask(crc) == records.unmask(records.fragment_crc(kind, payload))
        pos += records.HEADER_SIZE + length


@settings(max_examples=40)
@given(st.builds(sized, st.integers(1, 3 * BLOCK), st.binary(min_size=1, max_size=64)), st.data())
def test_any_flipped_byte_is_caught_and_named_by_a_record_offset(
    payload: bytes, data: st.DataObject
) -> None:
    framed = bytearray(frame([b"first record", payload, b"last"]))
    where = data.draw(st.integers(0, len(framed) - 1))
    framed[where] ^= data.draw(st.integers(1, 255))
    failure: records.CorruptRecord | None = None
    got: list[tuple[int, bytes]] = []
    try:
        got = read_all(bytes(framed))
    except records.CorruptRecord as exc:
        failure = exc
    if failure is not None:
        assert 0 <= failure.offset < len(framed)
        assert "offset" in str(failure)
    else:  # a flipped byte in the zero trailer of a block is padding, not data
        assert [r for _, r in got] == [b"first record", payload, b"last"]


@settings(max_examples=40)
@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=20), st.data())
def test_a_truncated_file_stops_at_the_cut_with_every_whole_record_before_it(
    items: list[bytes], data: st.DataObject
) -> None:
    framed = frame(items)
    cut = data.draw(st.integers(0, len(framed) - 1))
    got: list[bytes] = []
    reason = "truncated"
    stream = records.read_records(io.BytesIO(framed[:cut]))
    try:
        for _, record in stream:
            got.append(record)
    except records.CorruptRecord as exc:
        reason = exc.reason
    assert "truncated" in reason
    assert got == items[: len(got)]  # a prefix, never a damaged record


def test_mask_is_leveldbs_and_unmask_inverts_it() -> None:
    assert records.mask(0) == 0xA282EAD8
    for crc in (0, 1, 0xFFFFFFFF, 0x12345678):
        assert records.unmask(records.mask(crc)) == crc


def test_exactly_seven_bytes_left_get_a_zero_length_first_fragment() -> None:
    # One record filling a block up to 7 bytes from its end: the next record starts with
    # a header-only FIRST fragment there, as LevelDB writes it.
    first = b"a" * (BLOCK - 2 * records.HEADER_SIZE)
    data = frame([first, b"next"])
    _, length, kind = struct.unpack_from("<IHB", data, BLOCK - records.HEADER_SIZE)
    assert (length, kind) == (0, records.FIRST)
    assert read_all(data) == [(0, first), (BLOCK - records.HEADER_SIZE, b"next")]


def test_a_bad_checksum_names_the_record_offset() -> None:
    data = bytearray(frame([b"one", b"two", b"three"]))
    second = records.HEADER_SIZE + 3
    data[second + records.HEADER_SIZE] ^= 0x01  # a payload byte of "two"
    with pytest.raises(records.CorruptRecord) as caught:
        read_all(bytes(data))
    assert caught.value.offset == second
    assert "checksum" in caught.value.reason
