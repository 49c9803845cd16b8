"""The Raft log on RocksDB: the production `LogStorage`.

Owns the persistent layout of the log, hard state and snapshot metadata, and a memory
mirror of the held entries (a `raft.storage.MemoryStorage`) so the core's reads never
touch RocksDB. Every write goes to both: the mirror at once, RocksDB through the
caller's `WriteBatch`, which the driver writes and fsyncs (one WAL fdatasync per Ready,
shared with the state machine's batch: same database, same WAL) before it sends any
message. The mirror may run ahead of the disk only between a write and that fsync,
and nothing leaves the node in that window.

Layout:
    raftlog CF   uint64be(index)        -> msgpack [term, type, data]
    default CF   b"raft/hard_state"     -> msgpack [term, vote, commit]
                 b"raft/snapshot"       -> msgpack [index, term, voters, learners]

The state machine's data is the snapshot (it lives in the same database), so a
snapshot's `data` here is empty; the replica layer streams the state itself.
"""

from __future__ import annotations

import struct

import msgpack

from zonestore_node.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from zonestore_node.raft.storage import MemoryStorage
from zonestore_node.storage.engine import Engine, Family, WriteBatch

HARD_STATE_KEY = b"raft/hard_state"
SNAPSHOT_KEY = b"raft/snapshot"
_INDEX = struct.Struct(">Q")


def _entry_value(entry: Entry) -> bytes:
    packed: bytes = msgpack.packb([entry.term, int(entry.type), entry.data], use_bin_type=True)
    return packed


class RocksLogStorage:
    """A `LogStorage` persisted in the engine's raftlog family."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.mem = MemoryStorage()
        self._load()

    def _load(self) -> None:
        raw_snap = self.engine.get(Family.META, SNAPSHOT_KEY)
        if raw_snap:
            index, term, voters, learners = msgpack.unpackb(raw_snap, raw=False)
            meta = SnapshotMetadata(index, term, ConfState(frozenset(voters), frozenset(learners)))
            self.mem.apply_snapshot(Snapshot(meta))
        first = self.mem.first_index()
        entries: list[Entry] = []
        it = self.engine.iterator(Family.RAFTLOG)
        it.seek(_INDEX.pack(first))
        expected = first
        while it.valid():
            index = int(_INDEX.unpack(it.key())[0])
            if index != expected:
                break  # a hole can only follow a crash mid-truncation: the tail is garbage
            term, etype, data = msgpack.unpackb(it.value(), raw=False)
            entries.append(Entry(term, index, EntryType(etype), data))
            expected += 1
            it.next()
        self.mem.append(entries)
        raw_hs = self.engine.get(Family.META, HARD_STATE_KEY)
        if raw_hs:
            term, vote, commit = msgpack.unpackb(raw_hs, raw=False)
            self.mem.set_hard_state(HardState(term, vote, min(commit, self.mem.last_index())))

    @property
    def is_empty(self) -> bool:
        return self.mem.last_index() == 0 and self.mem.hard_state.term == 0

    # LogStorage (reads, served from memory) -------------------------------------

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.mem.initial_state()

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        return self.mem.entries(lo, hi, max_bytes)

    def term(self, index: int) -> int:
        return self.mem.term(index)

    def first_index(self) -> int:
        return self.mem.first_index()

    def last_index(self) -> int:
        return self.mem.last_index()

    def snapshot(self) -> Snapshot:
        return self.mem.snapshot()

    # Writes (the driver's side) ------------------------------------------------------

    @property
    def hard_state(self) -> HardState:
        return self.mem.hard_state

    def set_hard_state(self, hs: HardState, batch: WriteBatch) -> None:
        self.mem.set_hard_state(hs)
        batch.put(
            Family.META,
            HARD_STATE_KEY,
            msgpack.packb([hs.term, hs.vote, hs.commit], use_bin_type=True),
        )

    def append(self, entries: list[Entry], batch: WriteBatch) -> None:
        if not entries:
            return
        old_last = self.mem.last_index()
        self.mem.append(entries)
        first_new = max(entries[0].index, self.mem.first_index())
        for entry in entries:
            if entry.index >= first_new:
                batch.put(Family.RAFTLOG, _INDEX.pack(entry.index), _entry_value(entry))
        for stale in range(entries[-1].index + 1, old_last + 1):  # a truncated suffix
            batch.delete(Family.RAFTLOG, _INDEX.pack(stale))

    def _put_snapshot_meta(self, meta: SnapshotMetadata, batch: WriteBatch) -> None:
        batch.put(
            Family.META,
            SNAPSHOT_KEY,
            msgpack.packb(
                [
                    meta.index,
                    meta.term,
                    sorted(meta.conf_state.voters),
                    sorted(meta.conf_state.learners),
                ],
                use_bin_type=True,
            ),
        )

    def apply_snapshot(self, snap: Snapshot, batch: WriteBatch) -> None:
        """Replace the whole log by an installed snapshot."""
        old_first, old_last = self.mem.first_index(), self.mem.last_index()
        self.mem.apply_snapshot(Snapshot(snap.metadata))
        self._put_snapshot_meta(snap.metadata, batch)
        for index in range(old_first, old_last + 1):
            batch.delete(Family.RAFTLOG, _INDEX.pack(index))

    def create_snapshot(self, index: int, conf: ConfState, batch: WriteBatch) -> Snapshot:
        """Record that the state machine (in this database) covers the log up to `index`."""
        snap = self.mem.create_snapshot(index, conf, b"")
        self._put_snapshot_meta(snap.metadata, batch)
        return snap

    def compact(self, index: int, batch: WriteBatch) -> None:
        """Drop entries up to `index` (at most the snapshot's index)."""
        first = self.mem.first_index()
        self.mem.compact(index)
        for stale in range(first, index + 1):
            batch.delete(Family.RAFTLOG, _INDEX.pack(stale))
