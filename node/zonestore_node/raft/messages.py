"""Raft values: log entries, hard state, membership, snapshots and the wire messages.

Owns the data vocabulary every other raft module shares, and its plain-type wire
encoding (`to_wire` / `from_wire`: lists of ints, strs, bytes, bools and None, ready for
msgpack — never pickle). Imports nothing outside the standard library; does no I/O.

Wire format (version 1). A message is a list::

    [1, type, to, from, term, log_term, index, commit, reject, reject_hint,
     entries, snapshot, context, pre_vote]

- ``type`` is the `MessageType` int; ``to`` / ``from`` node id strings; ``context`` bytes.
- ``entries`` is a list of ``[term, index, entry_type, data]`` (``data`` is bytes).
- ``snapshot`` is ``None`` or ``[index, term, voters, learners, data]`` where ``voters`` and
  ``learners`` are sorted lists of node ids and ``data`` is the opaque payload (bytes).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

NONE = ""
"""The node id meaning "nobody" (no vote cast, no known leader)."""

WIRE_VERSION = 1


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to raft (a `ConfChange` for CONF_CHANGE)."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


def entry_size(entry: Entry) -> int:
    """The size flow control counts for an entry: its payload plus a fixed overhead."""
    return len(entry.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message is sent (§5.1, Figure 2 "persistent state").

    ``commit`` is persisted too so a restart need not re-learn it; it never exceeds the
    last durable log index.
    """

    term: int = 0
    vote: str = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class ConfState:
    """A membership: voters count in quorums; learners only receive the log.

    Invariant: ``voters`` and ``learners`` are disjoint.
    """

    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()

    def members(self) -> frozenset[str]:
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """The log position a snapshot covers and the membership in force at that position."""

    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``metadata.index``.

    ``data`` is opaque to raft. The replica layer may put the whole image here, or only a
    reference (e.g. a checkpoint id) and move the bytes itself in chunks.
    """

    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


class MessageType(enum.IntEnum):
    """Wire messages, as request/response pairs in the paper's vocabulary."""

    APPEND_ENTRIES = 1
    APPEND_ENTRIES_RESPONSE = 2
    REQUEST_VOTE = 3  # pre_vote=True: the pre-vote round of thesis §9.6
    REQUEST_VOTE_RESPONSE = 4
    INSTALL_SNAPSHOT = 5
    INSTALL_SNAPSHOT_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    TIMEOUT_NOW = 9  # leadership transfer, thesis §3.10
    READ_INDEX = 10  # follower -> leader, thesis §6.4
    READ_INDEX_RESPONSE = 11


@dataclass(frozen=True, slots=True)
class Message:
    """One raft message. Fields unused by a type keep their defaults.

    Field use per type:

    - APPEND_ENTRIES: ``index``/``log_term`` = prevLogIndex/prevLogTerm, ``entries``,
      ``commit`` = leaderCommit.
    - APPEND_ENTRIES_RESPONSE: ``index`` = last matching index on success; on
      ``reject``, ``index`` echoes the rejected prevLogIndex and ``reject_hint`` /
      ``log_term`` carry the follower's conflict hint (fast backtracking).
    - REQUEST_VOTE: ``index``/``log_term`` = lastLogIndex/lastLogTerm, ``pre_vote``,
      ``context`` = `CAMPAIGN_TRANSFER` when a leadership transfer forces the election.
    - REQUEST_VOTE_RESPONSE: ``reject`` = not granted; ``pre_vote`` echoes the request.
    - INSTALL_SNAPSHOT: ``snapshot``. INSTALL_SNAPSHOT_RESPONSE: ``index`` = last index.
    - HEARTBEAT: ``commit``, ``context`` (ReadIndex round). HEARTBEAT_RESPONSE: ``context``.
    - READ_INDEX: ``context`` = request ctx. READ_INDEX_RESPONSE: ``index``, ``context``.
    """

    type: MessageType
    to: str
    from_: str
    term: int
    log_term: int = 0
    index: int = 0
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    context: bytes = b""
    pre_vote: bool = False


CAMPAIGN_TRANSFER = b"transfer"


class WireError(ValueError):
    """A wire object that does not decode to a valid message."""


def to_wire(msg: Message) -> list[Any]:
    """Encode a message into plain types (see the module docstring for the layout)."""
    snap: list[Any] | None = None
    if msg.snapshot is not None:
        meta = msg.snapshot.metadata
        snap = [
            meta.index,
            meta.term,
            sorted(meta.conf_state.voters),
            sorted(meta.conf_state.learners),
            msg.snapshot.data,
        ]
    return [
        WIRE_VERSION,
        int(msg.type),
        msg.to,
        msg.from_,
        msg.term,
        msg.log_term,
        msg.index,
        msg.commit,
        msg.reject,
        msg.reject_hint,
        [[e.term, e.index, int(e.type), e.data] for e in msg.entries],
        snap,
        msg.context,
        msg.pre_vote,
    ]


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise WireError(f"expected a non-negative int, got {v!r}")
    return v


def _str(v: Any) -> str:
    if type(v) is not str:
        raise WireError(f"expected a str, got {v!r}")
    return v


def _bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise WireError(f"expected bytes, got {type(v).__name__}")
    return v


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise WireError(f"expected a bool, got {v!r}")
    return v


def from_wire(obj: Any) -> Message:
    """Decode what `to_wire` produced; raises `WireError` on anything malformed."""
    if not isinstance(obj, list | tuple) or len(obj) != 14:
        raise WireError("a message is a list of 14 fields")
    if obj[0] != WIRE_VERSION:
        raise WireError(f"unsupported wire version {obj[0]!r}")
    try:
        mtype = MessageType(obj[1])
        entries: list[Entry] = []
        for raw in obj[10]:
            term, index, etype, data = raw
            entries.append(Entry(_int(term), _int(index), EntryType(etype), _bytes(data)))
        snapshot: Snapshot | None = None
        if obj[11] is not None:
            s_index, s_term, voters, learners, data = obj[11]
            conf = ConfState(frozenset(map(_str, voters)), frozenset(map(_str, learners)))
            snapshot = Snapshot(SnapshotMetadata(_int(s_index), _int(s_term), conf), _bytes(data))
    except (TypeError, ValueError) as exc:
        raise WireError(str(exc)) from exc
    return Message(
        type=mtype,
        to=_str(obj[2]),
        from_=_str(obj[3]),
        term=_int(obj[4]),
        log_term=_int(obj[5]),
        index=_int(obj[6]),
        commit=_int(obj[7]),
        reject=_bool(obj[8]),
        reject_hint=_int(obj[9]),
        entries=tuple(entries),
        snapshot=snapshot,
        context=_bytes(obj[12]),
        pre_vote=_bool(obj[13]),
    )
