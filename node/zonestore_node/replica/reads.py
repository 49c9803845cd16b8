"""Linearizable reads of a replica group: ReadIndex rounds (thesis §6.4).

A strong read waits for a read point: the leader confirms its leadership with a
heartbeat round started after the read arrived (the core's ReadIndex, carrying a
context of our own), then waits until it has applied up to the read index and reads at
its applied commit timestamp. Reads arriving while a round runs wait for the next one,
so one round serves many reads. A round the core dropped (a lost heartbeat) is started
again after an election timeout.

A follower (with `follower_reads`, the default) does the same through the leader
(thesis §6.4.1): the core sends its ReadIndex request to the leader, which runs the
heartbeat round and answers with its commit index; the follower reads once it has
applied that far. Every write acknowledged before the read began is at or below that
index, so the read sees it. Round contexts carry the node id, so the leader never
mixes two replicas' rounds. A round sent to a leader that lost office is sent again to
the next one as soon as this replica hears of it.

`ReadIndexMixin` is a part of `RaftGroup` (replica/group.py), which owns the state
named here and, in its driver loop, moves rounds the core answered (its Ready's
read_states) to `_reads_applying`, then calls `_release_reads`. Must not import
replica/group.py (it imports this).
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from zonestore_node.raft.core import ProposalDropped, Role
from zonestore_node.raft.node import Node
from zonestore_node.replica.config import GroupConfig
from zonestore_node.replica.errors import NotLeader

_U64 = struct.Struct(">Q")


class ReadIndexMixin:
    """Read points for strong reads, for `RaftGroup`."""

    # State owned by RaftGroup (see its __init__).
    config: GroupConfig
    node: Node
    role: Role
    leader: str
    applied_index: int
    applied_ts: int
    _wake: asyncio.Event
    _reads_waiting: list[asyncio.Future[int]]
    _read_rounds: dict[bytes, list[asyncio.Future[int]]]
    _read_round_started: dict[bytes, float]
    _reads_applying: list[tuple[int, list[asyncio.Future[int]]]]
    _read_seq: int
    check_leader: Callable[[], None]

    def read_barrier(self) -> asyncio.Future[int]:
        """A linearizable read point (ReadIndex, thesis §6.4): resolves with the commit
        timestamp to read at, once the leader has confirmed its leadership with a
        heartbeat round started after the call and this replica has applied up to the
        read index. Raises NotLeader when no leader is known (or, without
        `follower_reads`, when this replica does not lead)."""
        if self.config.unsafe_local_reads:
            return self._resolved(self.applied_ts)
        if self.role is not Role.LEADER and self.config.follower_reads:
            if not self.leader:
                raise NotLeader(None)  # an election: the edge waits for a leader
        else:
            self.check_leader()
            if self.node.conf_state.voters == {self.config.node_id}:
                # A group of one voter: nobody else can lead or commit, so no round is
                # needed. Reading at the applied (not the committed) index is still
                # linearizable: a write is acknowledged only once applied, so every
                # write that completed before this read began is visible.
                return self._resolved(self.applied_ts)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads_waiting.append(future)
        if not self._read_rounds:
            self._start_read_round()
        return future

    @staticmethod
    def _resolved(value: int) -> asyncio.Future[int]:
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        done.set_result(value)
        return done

    def _start_read_round(self) -> None:
        if not self._reads_waiting:
            return
        self._read_seq += 1
        # Unique in the group: a leader serves the rounds of every replica at once.
        ctx = self.config.node_id.encode() + b"/" + _U64.pack(self._read_seq)
        waiters, self._reads_waiting = self._reads_waiting, []
        try:
            self.node.read_index(ctx)
        except ProposalDropped:
            for f in waiters:
                if not f.done():
                    f.set_exception(NotLeader(self.leader or None))
            return
        self._read_rounds[ctx] = waiters
        self._read_round_started[ctx] = time.monotonic()
        self._wake.set()

    def _retry_stale_reads(self) -> None:
        """The core may drop a ReadIndex round (a lost heartbeat): start it again."""
        limit = self.config.tick_seconds * self.config.election_tick
        now = time.monotonic()
        stale = [ctx for ctx, t in self._read_round_started.items() if now - t > limit]
        for ctx in stale:
            self._read_round_started.pop(ctx, None)
            self._reads_waiting.extend(self._read_rounds.pop(ctx, []))
        if stale and (self.role is Role.LEADER or self.config.follower_reads):
            self._start_read_round()

    def _requeue_reads(self) -> None:
        """A follower heard of a new leader: its rounds went to the old one, which may
        never answer. They go again, to the new leader, at the end of this Ready (a
        late answer from the old one is ignored: its round is no longer known)."""
        for ctx in list(self._read_rounds):
            self._reads_waiting.extend(self._read_rounds.pop(ctx))
            self._read_round_started.pop(ctx, None)

    def _release_reads(self) -> None:
        still: list[tuple[int, list[asyncio.Future[int]]]] = []
        for index, waiters in self._reads_applying:
            if index <= self.applied_index:
                for f in waiters:
                    if not f.done():
                        f.set_result(self.applied_ts)
            else:
                still.append((index, waiters))
        self._reads_applying = still

    def _fail_reads(self, exc: Exception) -> None:
        waiting = [f for ws in self._read_rounds.values() for f in ws] + self._reads_waiting
        waiting += [f for _, ws in self._reads_applying for f in ws]
        self._read_rounds.clear()
        self._read_round_started.clear()
        self._reads_waiting = []
        self._reads_applying = []
        for f in waiting:
            if not f.done():
                f.set_exception(exc)
