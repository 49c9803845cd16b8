"""The raft log as the core sees it: durable storage plus the not-yet-persisted tail.

Owns `Unstable` (entries and a snapshot handed to the driver but not yet reported
durable through ``advance()``) and `RaftLog` (one view over both, with commit_index
and applied_index). Imports nothing from other zonestore_node packages; does no I/O —
it only reads a `LogStorage`.

Invariants: ``applied_index <= commit_index <= last_index()``;
``unstable.offset == storage.last_index() + 1`` unless a snapshot is pending.
"""

from __future__ import annotations

from zonestore_node.raft.messages import Entry, Snapshot
from zonestore_node.raft.storage import ErrCompacted, LogStorage, limit_size


class Unstable:
    """Entries (from ``offset``) and at most one snapshot not yet durable."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.snapshot: Snapshot | None = None
        self.entries: list[Entry] = []
        self.offset = offset

    def maybe_first_index(self) -> int | None:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        if self.snapshot is not None:
            return self.snapshot.metadata.index
        return None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot is not None and self.snapshot.metadata.index == i:
                return self.snapshot.metadata.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to ``index`` (of ``term``) are durable; forget them."""
        t = self.maybe_term(index)
        if t is None or t != term or index < self.offset:
            return  # already replaced by a conflicting append: nothing to forget
        del self.entries[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snap_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.metadata.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            # Replaces everything unstable (and some durable entries: the driver's
            # storage.append truncates those when it persists these).
            self.offset = after
            self.entries = list(ents)
        else:
            del self.entries[after - self.offset :]
            self.entries.extend(ents)


class RaftLog:
    """The log: storage (durable) + unstable (pending), commit_index, applied_index."""

    __slots__ = ("applied_index", "commit_index", "max_apply_bytes", "storage", "unstable")

    def __init__(self, storage: LogStorage, max_apply_bytes: int | None = None) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.unstable = Unstable(last + 1)
        # Both start at the snapshot: everything before it is applied by definition.
        self.commit_index = first - 1
        self.applied_index = first - 1
        self.max_apply_bytes = max_apply_bytes

    # --- positions ---

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def term(self, i: int) -> int:
        """The term at ``i``; 0 when ``i`` is past the end; raises `ErrCompacted` below."""
        u = self.unstable
        k = i - u.offset
        if 0 <= k < len(u.entries):
            return u.entries[k].term  # fast path: the unstable tail
        dummy = self.first_index() - 1
        if i < dummy:
            raise ErrCompacted(f"term of {i}: compacted up to {dummy}")
        if i > self.last_index():
            return 0
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except ErrCompacted:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, i: int, term: int) -> bool:
        try:
            return self.term(i) == term
        except ErrCompacted:
            return False

    def is_up_to_date(self, last_index: int, term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up-to-date as ours."""
        our_term = self.last_term()
        return term > our_term or (term == our_term and last_index >= self.last_index())

    # --- appending ---

    def find_conflict(self, ents: tuple[Entry, ...] | list[Entry]) -> int:
        """The index of the first entry that is new or conflicts; 0 if all are present.

        §5.3, AppendEntries receiver, step 3: a conflicting entry (same index, different
        term) means the rest of our log must go.
        """
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest ``(i, term(i))`` with ``i <= index`` and ``term(i) <= term``.

        Fast backtracking (§5.3, "the follower can include the term of the conflicting
        entry"): every entry in between has a term the other side cannot have.
        """
        i = index
        while i > 0:
            try:
                t = self.term(i)
            except ErrCompacted:
                return i, 0
            if t <= term:
                return i, t
            i -= 1
        return 0, 0

    def maybe_append(
        self, index: int, log_term: int, commit: int, ents: tuple[Entry, ...]
    ) -> tuple[int, int] | None:
        """§5.3, AppendEntries receiver, steps 2-5.

        Returns ``(last_new_index, first_written_index)`` — the second is 0 if nothing
        was written — or None when the log does not contain prevLogIndex/prevLogTerm.
        """
        if not self.match_term(index, log_term):
            return None  # step 2
        last_new = index + len(ents)
        conflict = self.find_conflict(ents)
        if conflict:
            if conflict <= self.commit_index:
                raise AssertionError(
                    f"entry {conflict} conflicts with committed entry (commit {self.commit_index})"
                )
            start = conflict - (index + 1)
            self.append(list(ents[start:]))  # steps 3-4
        self.commit_to(min(commit, last_new))  # step 5
        return last_new, conflict

    def append(self, ents: list[Entry]) -> int:
        if ents:
            if ents[0].index - 1 < self.commit_index:
                raise AssertionError(f"append at {ents[0].index} below commit {self.commit_index}")
            self.unstable.truncate_and_append(ents)
        return self.last_index()

    # --- reading ---

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries in ``[lo, hi)``; raises `ErrCompacted` when ``lo`` is compacted."""
        if lo >= hi:
            return []
        first = self.first_index()
        if lo < first:
            raise ErrCompacted(f"slice from {lo}: first index is {first}")
        out: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            out = self.storage.entries(lo, min(hi, off), max_bytes)
            if len(out) < min(hi, off) - lo:
                return out  # the size limit stopped storage short
        if hi > off:
            u = self.unstable.entries[max(lo, off) - off : hi - off]
            out = out + u if out else u
        return limit_size(out, max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_committed(self) -> bool:
        return self.commit_index > max(self.applied_index, self.first_index() - 1)

    def next_committed(self) -> list[Entry]:
        lo = max(self.applied_index + 1, self.first_index())
        if self.commit_index + 1 > lo:
            return self.slice(lo, self.commit_index + 1, self.max_apply_bytes)
        return []

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot is not None:
            return self.unstable.snapshot
        return self.storage.snapshot()

    # --- moving the marks ---

    def commit_to(self, index: int) -> None:
        if index > self.commit_index:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last index {self.last_index()}")
            self.commit_index = index  # never decreases

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: only an entry of the leader's current term is committed by counting."""
        if index > self.commit_index and self.term_or_zero(index) == term:
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index:
            if index > self.commit_index or index < self.applied_index:
                raise AssertionError(
                    f"applied {index} outside [{self.applied_index}, {self.commit_index}]"
                )
            self.applied_index = index

    def restore(self, snap: Snapshot) -> None:
        self.commit_index = snap.metadata.index
        self.unstable.restore(snap)
