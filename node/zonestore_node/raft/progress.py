"""The leader's view of each follower: `Progress` (match_index, next_index, flow state).

Owns the per-peer replication state machine (etcd's Progress): PROBE sends one
AppendEntries at a time until a match is found, REPLICATE pipelines several
(bounded by `Inflights`), SNAPSHOT waits for an InstallSnapshot to land. Imports
nothing from other zonestore_node packages; does no I/O.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """AppendEntries in flight to one follower: (last index, bytes), oldest first."""

    __slots__ = ("_bytes", "_queue", "max_bytes", "max_count")

    def __init__(self, max_count: int, max_bytes: int | None = None) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._queue: deque[tuple[int, int]] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, last_index: int, size: int) -> None:
        self._queue.append((last_index, size))
        self._bytes += size

    def full(self) -> bool:
        if len(self._queue) >= self.max_count:
            return True
        return self.max_bytes is not None and self._bytes >= self.max_bytes

    def free_le(self, index: int) -> None:
        """Forget messages whose last index is <= ``index`` (acknowledged)."""
        q = self._queue
        while q and q[0][0] <= index:
            self._bytes -= q.popleft()[1]

    def free_first_one(self) -> None:
        if self._queue:
            self._bytes -= self._queue.popleft()[1]

    def reset(self) -> None:
        self._queue.clear()
        self._bytes = 0


class Progress:
    """Invariants: ``match_index < next_index``; in SNAPSHOT, ``pending_snapshot > 0``."""

    __slots__ = (
        "inflights",
        "is_learner",
        "match_index",
        "next_index",
        "paused",
        "pending_snapshot",
        "recent_active",
        "state",
    )

    def __init__(
        self,
        next_index: int,
        max_inflight: int,
        max_inflight_bytes: int | None = None,
        is_learner: bool = False,
    ) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        self.paused = False  # PROBE: an AppendEntries is out, wait for its answer
        self.pending_snapshot = 0
        self.recent_active = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight, max_inflight_bytes)

    def _reset(self, state: ProgressState) -> None:
        self.paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state is ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(ProgressState.PROBE)
            self.next_index = max(self.match_index + 1, pending + 1)
        else:
            self._reset(ProgressState.PROBE)
            self.next_index = self.match_index + 1

    def become_replicate(self) -> None:
        self._reset(ProgressState.REPLICATE)
        self.next_index = self.match_index + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``; True if match_index moved."""
        updated = False
        if self.match_index < index:
            self.match_index = index
            updated = True
            self.paused = False
        self.next_index = max(self.next_index, index + 1)
        return updated

    def sent_entries(self, last_index: int, size: int) -> None:
        """Pipelining: in REPLICATE, assume success and move next_index on."""
        if self.state is ProgressState.REPLICATE:
            if last_index >= self.next_index:
                self.next_index = last_index + 1
                self.inflights.add(last_index, size)
        elif self.state is ProgressState.PROBE:
            self.paused = True

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the AppendEntries whose prevLogIndex was ``rejected``.

        Returns False for a stale rejection (already overtaken). ``match_hint`` is the
        follower's conflict hint, already mapped to our log (fast backtracking).
        """
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False  # stale
            self.next_index = self.match_index + 1
            return True
        if self.next_index - 1 != rejected:
            return False  # stale: we already probe elsewhere
        self.next_index = max(min(rejected, match_hint + 1), self.match_index + 1, 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.paused
        if self.state is ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match_index}, next={self.next_index}, "
            f"state={self.state.value}, paused={self.paused}, inflight={len(self.inflights)})"
        )
