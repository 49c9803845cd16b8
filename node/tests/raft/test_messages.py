"""The wire encoding: plain types, msgpack-safe, round trips exactly, rejects garbage."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zonestore_node.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
    WireError,
    from_wire,
    to_wire,
)

ids = st.text(min_size=1, max_size=12)
u64 = st.integers(min_value=0, max_value=2**63 - 1)
entries = st.builds(Entry, u64, u64, st.sampled_from(EntryType), st.binary(max_size=64))
snapshots = st.builds(
    Snapshot,
    st.builds(
        SnapshotMetadata,
        u64,
        u64,
        st.builds(ConfState, st.frozensets(ids, max_size=5), st.frozensets(ids, max_size=3)),
    ),
    st.binary(max_size=64),
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=ids,
    from_=ids,
    term=u64,
    log_term=u64,
    index=u64,
    commit=u64,
    reject=st.booleans(),
    reject_hint=u64,
    entries=st.lists(entries, max_size=5).map(tuple),
    snapshot=st.none() | snapshots,
    context=st.binary(max_size=16),
    pre_vote=st.booleans(),
)


@given(messages)
def test_every_message_round_trips_through_msgpack(msg: Message) -> None:
    packed = msgpack.packb(to_wire(msg))
    assert from_wire(msgpack.unpackb(packed)) == msg


def test_wire_form_is_a_flat_list_of_plain_values() -> None:
    msg = Message(
        MessageType.APPEND_ENTRIES,
        "zs-b-0",
        "zs-a-0",
        7,
        log_term=6,
        index=41,
        commit=40,
        entries=(Entry(7, 42, EntryType.NORMAL, b"put"),),
    )
    assert to_wire(msg) == [
        1,
        1,
        "zs-b-0",
        "zs-a-0",
        7,
        6,
        41,
        40,
        False,
        0,
        [[7, 42, 0, b"put"]],
        None,
        b"",
        False,
    ]


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        [2, 1, "b", "a", 1, 0, 0, 0, False, 0, [], None, b"", False],  # unknown version
        [1, 99, "b", "a", 1, 0, 0, 0, False, 0, [], None, b"", False],  # unknown type
        [1, 1, "b", "a", -1, 0, 0, 0, False, 0, [], None, b"", False],  # negative term
        [1, 1, "b", "a", 1, 0, 0, 0, 0, 0, [], None, b"", False],  # reject not a bool
        [
            1,
            1,
            "b",
            "a",
            1,
            0,
            0,
            0,
            False,
            0,
            [[1, 1, 0, "str"]],
            None,
            b"",
            False,
        ],  # data not bytes
        [1, 1, "b", "a", 1, 0, 0, 0, False, 0, [[1, 1]], None, b"", False],  # short entry
        [1, 5, "b", "a", 1, 0, 0, 0, False, 0, [], [1, 1, ["a"], []], b"", False],  # short snapshot
    ],
)
def test_malformed_wire_objects_raise_wire_error(bad: object) -> None:
    with pytest.raises(WireError):
        from_wire(bad)
