"""The log storage contract the raft core reads, and an in-memory implementation.

Owns `LogStorage` (the read-only view the core needs), its errors, `MemoryStorage`
(used by tests and the simulator) and `bootstrap_log`. Imports nothing from other
zonestore_node packages; does no I/O. The raft core never writes storage: the driver
writes what a `Ready` hands over (see `core`), then calls `advance()`.

Index layout of a storage::

    snapshot.index = first_index() - 1   (its term is still answerable by term())
    [first_index(), last_index()]        entries held, contiguous
    last_index() = first_index() - 1     when no entry is held

Errors:

- `ErrCompacted`: the index lies below ``first_index() - 1`` (or, for `entries`,
  ``lo < first_index()``) — it was folded into a snapshot. The core then sends the
  snapshot instead of entries.
- `ErrUnavailable`: the index lies above ``last_index()``. The core never asks for that;
  it signals a bug in the caller or the storage.
- `ErrSnapshotTemporarilyUnavailable`: `snapshot()` cannot answer right now (e.g. a
  checkpoint is being produced); the core retries later.

Bootstrap and membership: a founding member writes `bootstrap_log` (one committed
CONF_CHANGE entry per founding member) before its first start; a member added later
starts from an empty storage and learns the membership from the log or a snapshot. At
start the core reads `initial_state()`, `snapshot().metadata.index`, and the entries
after that index (to replay the CONF_CHANGE entries: a configuration is in force from
the moment it is appended). So `compact(i)` must keep ``i <= snapshot index``.
"""

from __future__ import annotations

from typing import Protocol

from zonestore_node.raft.confchange import ConfChange, ConfChangeOp
from zonestore_node.raft.messages import (
    EMPTY_HARD_STATE,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
    entry_size,
)


class StorageError(Exception):
    """Base of the errors a `LogStorage` raises."""


class ErrCompacted(StorageError):
    """The requested index was compacted into a snapshot."""


class ErrUnavailable(StorageError):
    """The requested index is beyond the last index."""


class ErrSnapshotOutOfDate(StorageError):
    """A snapshot older than the one already held was offered or requested."""


class ErrSnapshotTemporarilyUnavailable(StorageError):
    """No snapshot can be returned right now; ask again later."""


class LogStorage(Protocol):
    """What the raft core reads. Every method must be cheap and never block on the network.

    Only what the driver has durably written (from `Ready`) may be visible here.
    """

    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted `HardState` and the membership recorded with the snapshot.

        That membership is ``snapshot().metadata.conf_state`` (empty for a storage holding
        no snapshot). The core replays the CONF_CHANGE entries held after the snapshot's
        index on top of it, because a configuration takes effect when appended (see
        `confchange`).
        """
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in the half-open range ``[lo, hi)``, in order.

        Stops before the entry that would make the sum of `entry_size` exceed
        ``max_bytes``, but always returns at least one entry when ``lo < hi``.
        Raises `ErrCompacted` if ``lo < first_index()``, `ErrUnavailable` if
        ``hi > last_index() + 1``.
        """
        ...

    def term(self, index: int) -> int:
        """The term of the entry at ``index``, for ``first_index() - 1 <= index <= last_index()``.

        Raises `ErrCompacted` below that range, `ErrUnavailable` above it.
        """
        ...

    def first_index(self) -> int:
        """The index of the first entry held (``snapshot index + 1``)."""
        ...

    def last_index(self) -> int:
        """The index of the last entry held (``first_index() - 1`` if none)."""
        ...

    def snapshot(self) -> Snapshot:
        """The most recent snapshot (an empty one at index 0 if none was ever taken).

        May raise `ErrSnapshotTemporarilyUnavailable`.
        """
        ...


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of ``ents`` within ``max_bytes`` — but at least one entry."""
    if max_bytes is None or not ents:
        return ents
    total = 0
    for i, e in enumerate(ents):
        total += entry_size(e)
        if total > max_bytes and i > 0:
            return ents[:i]
    return ents


def bootstrap_log(conf: ConfState) -> tuple[HardState, list[Entry]]:
    """The log every founding member writes before its first start.

    One committed CONF_CHANGE entry per member (term 1, indexes 1..n), so a member added
    later learns the founding membership from the log like any other change.
    """
    ents: list[Entry] = []
    changes = [ConfChange(ConfChangeOp.ADD_VOTER, v) for v in sorted(conf.voters)]
    changes += [ConfChange(ConfChangeOp.ADD_LEARNER, v) for v in sorted(conf.learners)]
    for i, cc in enumerate(changes, start=1):
        ents.append(Entry(1, i, EntryType.CONF_CHANGE, cc.to_bytes()))
    return HardState(term=1, vote="", commit=len(ents)), ents


class MemoryStorage:
    """An in-memory `LogStorage`; also the tests' model of "what survived on disk".

    ``_ents[0]`` is a dummy entry at the snapshot's index and term, so ``term()`` can
    answer for ``first_index() - 1``.
    """

    __slots__ = ("_ents", "_hard_state", "_snapshot")

    def __init__(self) -> None:
        self._hard_state = EMPTY_HARD_STATE
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    @classmethod
    def bootstrapped(cls, conf: ConfState) -> MemoryStorage:
        """A storage holding `bootstrap_log` for ``conf``."""
        st = cls()
        hs, ents = bootstrap_log(conf)
        st.append(ents)
        st.set_hard_state(hs)
        return st

    # --- LogStorage ---

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise ErrCompacted(f"entries from {lo}: compacted up to {offset}")
        if hi > self.last_index() + 1:
            raise ErrUnavailable(f"entries to {hi}: last index is {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise ErrCompacted(f"term of {index}: compacted up to {offset}")
        if index - offset >= len(self._ents):
            raise ErrUnavailable(f"term of {index}: last index is {self.last_index()}")
        return self._ents[index - offset].term

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # --- writes (the driver's side) ---

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, ents: list[Entry]) -> None:
        """Append, truncating any held suffix that ``ents`` overwrites."""
        if not ents:
            return
        first = self.first_index()
        if ents[-1].index < first:
            return  # entirely compacted already
        if ents[0].index < first:
            ents = ents[first - ents[0].index :]
        offset = ents[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise ErrUnavailable(
                f"missing log entries: last {self.last_index()}, append at {ents[0].index}"
            )
        del self._ents[offset:]
        self._ents.extend(ents)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by ``snap`` (a follower installing a leader's snapshot)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            raise ErrSnapshotOutOfDate(f"snapshot at {snap.metadata.index} is not newer")
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: int, conf: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the applied state at ``index`` (entries are kept)."""
        if index <= self._snapshot.metadata.index:
            raise ErrSnapshotOutOfDate(f"snapshot at {index} is not newer")
        if index > self.last_index():
            raise ErrUnavailable(f"snapshot at {index}: last index is {self.last_index()}")
        meta = SnapshotMetadata(index, self.term(index), conf)
        self._snapshot = Snapshot(meta, data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to and including ``index``; keep its term as the dummy.

        ``index`` must not exceed the snapshot's index: compacting past the snapshot would
        leave a gap that no follower could be brought across. Raises `ErrCompacted` if
        already compacted past ``index``.
        """
        offset = self._ents[0].index
        if index <= offset:
            raise ErrCompacted(f"compact to {index}: already compacted to {offset}")
        if index > self._snapshot.metadata.index:
            raise ErrUnavailable(
                f"compact to {index}: snapshot is at {self._snapshot.metadata.index}"
            )
        i = index - offset
        self._ents = [Entry(self._ents[i].term, index), *self._ents[i + 1 :]]
