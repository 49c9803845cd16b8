"""`Node`: the driver-facing API over `core.Raft` — inputs in, one `Ready` out.

Owns `Ready`, `Status` and the bookkeeping between a `Ready` and its `advance()`.
Imports nothing from other zonestore_node packages; does no I/O.

The driver loop (the replica layer, and the simulator in the tests) MUST do, per Ready::

    rd = node.ready()
    1. persist: storage.apply_snapshot(rd.snapshot) if any, storage.append(rd.entries),
       storage.set_hard_state(rd.hard_state) if any — durably (fsync) when rd.must_sync;
    2. send rd.messages (only now: a vote or an ack must never leave before the state it
       promises is durable);
    3. apply: restore rd.snapshot into the state machine if any, then apply
       rd.committed_entries in order; serve rd.read_states once applied_index >= index;
    4. node.advance(rd).

Call `ready()` only when `has_ready()`, and exactly once before each `advance()`.
Inputs (`tick`, `step`, `propose*`, ...) may be called at any time in between; their
effects appear in the next Ready. If the process crashes, only what step 1 persisted
survives; restart with a new `Node` over the same storage and ``Config.applied`` set to
the state machine's applied_index.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from zonestore_node.raft.confchange import ConfChange
from zonestore_node.raft.core import Config, Raft, ReadState, Role, SoftState
from zonestore_node.raft.messages import (
    ConfState,
    Entry,
    HardState,
    Message,
    MessageType,
    Snapshot,
)
from zonestore_node.raft.progress import ProgressState
from zonestore_node.raft.storage import LogStorage


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything the driver must do, in the order of the module docstring.

    ``soft_state`` / ``hard_state`` are None when unchanged since the previous Ready.
    ``committed_entries`` may include entries that are in ``entries`` of this same
    Ready: persisting first makes applying them safe.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False  # entries or term/vote changed: fsync before sending


@dataclass(frozen=True, slots=True)
class PeerStatus:
    match_index: int
    next_index: int
    state: ProgressState
    recent_active: bool
    is_learner: bool


@dataclass(frozen=True, slots=True)
class Status:
    """What the admin API shows. ``progress`` is only filled on the leader."""

    id: str
    term: int
    vote: str
    role: Role
    lead: str
    commit_index: int
    applied_index: int
    last_index: int
    conf_state: ConfState
    lead_transferee: str
    progress: dict[str, PeerStatus]


class Node:
    """One raft member as the driver sees it (etcd's RawNode)."""

    __slots__ = ("_prev_hard", "_prev_soft", "raft")

    def __init__(self, config: Config, storage: LogStorage, rng: random.Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        self._prev_hard, _ = storage.initial_state()

    @property
    def id(self) -> str:
        return self.raft.id

    # --- inputs ---

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""
        self.raft.tick()

    def step(self, msg: Message) -> None:
        """Feed a message received from a peer. Messages for another id are ignored."""
        if msg.to == self.raft.id:
            self.raft.step(msg)

    def campaign(self) -> None:
        """Start an election now (pre-vote first if enabled)."""
        self.raft.hup(transfer=False)

    def propose(self, data: bytes) -> int:
        """Append one entry (leader only); returns its index. Raises `ProposalDropped`."""
        return self.raft.propose([data])

    def propose_batch(self, datas: list[bytes]) -> int:
        """Append several entries in one AppendEntries round; returns the last index."""
        if not datas:
            raise ValueError("empty batch")
        return self.raft.propose(datas)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Append a membership change; returns its index. Raises `ProposalDropped` when
        not leader or another change is uncommitted, `ConfChangeError` when invalid."""
        return self.raft.propose_conf_change(change)

    def transfer_leadership(self, target: str) -> None:
        """Leader only: hand leadership to ``target`` (proposals are refused meanwhile)."""
        self.raft.transfer_leadership(target)

    def read_index(self, request_ctx: bytes) -> None:
        """Ask for a linearizable read point; answered as a `ReadState` in a later Ready.

        ``request_ctx`` must be unique among in-flight reads. The request may be lost
        (leader change, dropped message): the caller retries after a timeout.
        Raises `ProposalDropped` when no leader is known.
        """
        self.raft.read_index(request_ctx)

    def report_unreachable(self, peer: str) -> None:
        """The transport failed to deliver to ``peer``: stop pipelining to it."""
        self.raft.report_unreachable(peer)

    def report_snapshot(self, peer: str, failure: bool) -> None:
        """The transfer of an InstallSnapshot to ``peer`` finished (or failed)."""
        self.raft.report_snapshot(peer, failure)

    # --- outputs ---

    def has_ready(self) -> bool:
        r = self.raft
        log = r.log
        return bool(
            r.msgs
            or log.unstable.entries
            or log.unstable.snapshot is not None
            or r.read_states
            or log.has_next_committed()
            or r.lead != self._prev_soft.lead
            or r.role is not self._prev_soft.role
            or r.term != self._prev_hard.term
            or r.vote != self._prev_hard.vote
            or log.commit_index != self._prev_hard.commit
        )

    def ready(self) -> Ready:
        r = self.raft
        log = r.log
        soft = r.soft_state()
        hard = r.hard_state()
        prev_hard = self._prev_hard
        entries = log.unstable_entries()
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard if hard != prev_hard else None,
            entries=entries,
            snapshot=log.unstable.snapshot,
            committed_entries=log.next_committed(),
            messages=_latest_heartbeats(r.msgs),
            read_states=r.read_states,
            must_sync=bool(entries)
            or hard.term != prev_hard.term
            or hard.vote != prev_hard.vote
            or log.unstable.snapshot is not None,
        )
        r.msgs = []
        r.read_states = []
        self._prev_soft = soft
        self._prev_hard = hard
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd``."""
        log = self.raft.log
        if rd.snapshot is not None:
            index = rd.snapshot.metadata.index
            log.unstable.stable_snap_to(index)
            if index > log.applied_index:
                log.applied_index = index
        if rd.entries:
            last = rd.entries[-1]
            log.unstable.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)

    # --- views ---

    @property
    def conf_state(self) -> ConfState:
        """The membership in force (the latest in the log, committed or not)."""
        return self.raft.conf_state

    def conf_state_at(self, index: int) -> ConfState:
        """The membership after applying up to ``index`` — record it in a snapshot."""
        return self.raft.conf_state_at(index)

    def status(self) -> Status:
        r = self.raft
        progress: dict[str, PeerStatus] = {}
        if r.role is Role.LEADER:
            for nid, pr in sorted(r.prs.items()):
                progress[nid] = PeerStatus(
                    pr.match_index, pr.next_index, pr.state, pr.recent_active, pr.is_learner
                )
        return Status(
            id=r.id,
            term=r.term,
            vote=r.vote,
            role=r.role,
            lead=r.lead,
            commit_index=r.log.commit_index,
            applied_index=r.log.applied_index,
            last_index=r.log.last_index(),
            conf_state=r.conf_state,
            lead_transferee=r.lead_transferee,
            progress=progress,
        )


def _latest_heartbeats(msgs: list[Message]) -> list[Message]:
    """Only the last heartbeat to each peer of one Ready goes out.

    Every ReadIndex request a leader takes broadcasts a heartbeat carrying the newest
    pending read context (thesis §6.4 step 3), so reads arriving from several replicas
    between two Readies queue several heartbeats per peer. The last one carries the
    newest context and commit index: its acknowledgement confirms every earlier round
    too (raft/readonly.py releases rounds in order), so the earlier ones are redundant
    work for the peer and for this leader's answers to them.
    """
    if len(msgs) < 2:
        return msgs
    last: dict[str, int] = {}
    beats = 0
    for i, m in enumerate(msgs):
        if m.type is MessageType.HEARTBEAT:
            last[m.to] = i
            beats += 1
    if beats == len(last):
        return msgs
    return [m for i, m in enumerate(msgs) if m.type is not MessageType.HEARTBEAT or last[m.to] == i]
