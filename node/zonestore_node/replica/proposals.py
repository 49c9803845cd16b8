"""Proposals of a replica group, from `submit` to their result: step 3 of the driver.

A command queued by `submit` is proposed with the others of its turn of the event loop
(`_propose_queued`); once committed, `_apply_entries` applies it through the injected
state machine, in log order, consecutive commands sharing a RocksDB batch unless one
reads what another wrote, with the applied position in the same batch, and only then
releases its future. A future whose entry was overwritten by another leader fails with
ProposalLost; one whose fate this replica cannot learn, with OutcomeUnknown.

`ProposalMixin` is a part of `RaftGroup` (replica/group.py), which owns the state named
here and calls `_propose_queued` and `_apply_entries` from its driver loop. Must not
import replica/group.py (it imports this).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from zonestore_node.raft import messages as rmsg
from zonestore_node.raft.confchange import ConfChange, ConfChangeError
from zonestore_node.raft.core import ProposalDropped, Role
from zonestore_node.raft.node import Node
from zonestore_node.replica.config import GroupConfig
from zonestore_node.replica.errors import NotLeader, OutcomeUnknown, ProposalLost
from zonestore_node.replica.layout import APPLIED_KEY, APPLIED_VALUE, COMMIT_PREFIX
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family, WriteBatch

log = logging.getLogger("zonestore.replica")

ApplyFn = Callable[[mvcc.Store, Any, WriteBatch], Any]
DecodeFn = Callable[[bytes], Any]
# The keys applying a command reads and writes (any bytes naming them; compared only
# with other commands' keys), or None when it may read anything.
TouchesFn = Callable[[Any], "frozenset[bytes] | None"]


class ProposalMixin:
    """Proposing commands and applying committed entries, for `RaftGroup`."""

    # State owned by RaftGroup (see its __init__).
    config: GroupConfig
    engine: Engine
    store: mvcc.Store
    storage: RocksLogStorage
    node: Node
    clock: Any
    role: Role
    leader: str
    term_start_index: int
    applied_index: int
    applied_bytes_since_snapshot: int
    applied_ts: int
    _apply: ApplyFn
    _decode: DecodeFn
    _touches: TouchesFn
    _wake: asyncio.Event
    _leader_ready: asyncio.Event
    _pending: dict[int, tuple[int, asyncio.Future[Any], Any]]
    _proposals: list[tuple[bytes, asyncio.Future[Any], Any]]
    check_leader: Callable[[], None]
    take_snapshot: Callable[[], int]
    _remember_member: Callable[[ConfChange, WriteBatch], None]
    _fail_reads: Callable[[Exception], None]

    def submit(self, command: Any) -> asyncio.Future[Any]:
        """Queue a command for proposal; the future resolves with the apply result once
        committed and applied here (or raises NotLeader if it could not be proposed).
        Raises NotLeader at once when this replica cannot propose.

        Commands queued in one turn of the event loop are proposed together by the
        driver (`_propose_queued`): one log append, one AppendEntries per follower."""
        self.check_leader()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((COMMIT_PREFIX + command.encode(), future, command))
        self._wake.set()
        return future

    def _propose_queued(self) -> None:
        queued, self._proposals = self._proposals, []
        try:
            last = self.node.propose_batch([data for data, _, _ in queued])
        except ProposalDropped:
            for _, future, _ in queued:
                if not future.done():
                    future.set_exception(NotLeader(self.leader or None))
            return
        term = self.node.raft.term
        for offset, (_, future, command) in enumerate(queued):
            self._pending[last - len(queued) + 1 + offset] = (term, future, command)

    def _apply_entries(self, entries: list[rmsg.Entry]) -> None:
        """Apply committed entries in order, sharing RocksDB batches between them.

        Commands go into one batch (one write, with the applied position) as long as
        none reads what an earlier one in the batch wrote: `touches` names the keys a
        command reads and writes, or None when it may read more, and then the batch is
        written before and after it. Results are released once their batch is written.
        """
        batch = self.engine.batch()
        batch_keys: set[bytes] = set()
        settle: list[tuple[tuple[int, asyncio.Future[Any], Any], int, Any]] = []
        for entry in entries:
            result: Any = None
            pending = self._pending.pop(entry.index, None)
            self.applied_bytes_since_snapshot += len(entry.data)
            if entry.type is rmsg.EntryType.CONF_CHANGE:
                try:
                    change = ConfChange.from_bytes(entry.data)
                    result = change
                    self._remember_member(change, batch)
                except ConfChangeError:
                    result = None
            elif entry.data.startswith(COMMIT_PREFIX):
                if pending is not None and pending[0] == entry.term:
                    command = pending[2]
                else:
                    command = self._decode(entry.data[1:])
                keys = self._touches(command)
                if batch.count and (keys is None or not batch_keys.isdisjoint(keys)):
                    batch = self._write_applied(batch, settle)
                    batch_keys.clear()
                self.clock.observe(command.commit_ts)
                result = self._apply(self.store, command, batch)
                self.applied_ts = max(self.applied_ts, command.commit_ts)
                if keys is None:
                    self.applied_index = entry.index
                    if pending is not None:
                        settle.append((pending, entry.term, result))
                    batch = self._write_applied(batch, settle)
                    batch_keys.clear()
                    continue
                batch_keys.update(keys)
            self.applied_index = entry.index
            if pending is not None:
                settle.append((pending, entry.term, result))
        if batch.count or settle:
            self._write_applied(batch, settle)
        if (
            self.role is Role.LEADER
            and self.applied_index >= self.term_start_index
            and not self._leader_ready.is_set()
        ):
            self._leader_ready.set()
            log.info("raft.leader_ready node=%s term=%d", self.config.node_id, self.node.raft.term)
        if (
            self.applied_index - self.storage.snapshot().metadata.index
            >= self.config.snapshot_every
            or self.applied_bytes_since_snapshot >= self.config.snapshot_bytes
        ):
            self.take_snapshot()
        # Proposals at or below the applied index that no applied entry matched were
        # covered by an installed snapshot: whether the entry at their index was theirs
        # (committed by the next leader) or another cannot be told from the snapshot,
        # so their outcome is unknown, not "not applied" (jepsen partition: a write
        # replicated to one follower before its leader was cut off, committed by the
        # next leader, then the old leader caught up by snapshot).
        for index in [i for i in self._pending if i <= self.applied_index]:
            _, future, _ = self._pending.pop(index)
            if not future.done():
                future.set_exception(OutcomeUnknown("covered by an installed snapshot"))

    def _write_applied(
        self,
        batch: WriteBatch,
        settle: list[tuple[tuple[int, asyncio.Future[Any], Any], int, Any]],
    ) -> WriteBatch:
        """Write `batch` with the applied position, release the results it carries, and
        return a fresh batch."""
        batch.put(Family.META, APPLIED_KEY, APPLIED_VALUE.pack(self.applied_index, self.applied_ts))
        self.engine.write(batch)
        for (term, future, _), entry_term, result in settle:
            if not future.done():
                if term == entry_term:
                    future.set_result(result)
                else:
                    future.set_exception(ProposalLost("overwritten by a new leader"))
        settle.clear()
        return self.engine.batch()

    def _fail_pending(self) -> None:
        """On shutdown: what was never proposed is safe to send elsewhere (NotLeader);
        what is already in the log may still commit, so its outcome is unknown."""
        for _, future, _ in self._proposals:
            if not future.done():
                future.set_exception(NotLeader(None))
        self._proposals.clear()
        for _, future, _ in self._pending.values():
            if not future.done():
                future.set_exception(OutcomeUnknown("the replica stopped before the result"))
        self._pending.clear()
        self._fail_reads(NotLeader(None))
