"""The replica group: drives the pure Raft core with real time, disk and network.

Owns the driver loop and the order of its steps, for every `Ready` (raft/node.py):

    1. persist   entries, hard state (and snapshot) into RocksDB, then one WAL
                 fdatasync when the Ready says so: in the sync thread (it releases the
                 GIL; proposals arriving meanwhile join the next Ready: group commit),
                 or inline while the replica is quiet (replica/walsync.py SyncPolicy);
    2. send      the messages, only now that what they promise is durable (a leader
                 whose term and vote are already durable sends its AppendEntries before
                 the fsync instead, thesis §10.2.1: it counts itself only through
                 entries, and clients hear back only after step 3);
    3. apply     committed entries in log order through the injected state machine
                 (`apply`), consecutive commands sharing a RocksDB batch unless one
                 reads what another wrote (`touches`), the applied index and commit
                 timestamp written in the same batch; then release proposal results and
                 linearizable reads whose read index has been applied;
    4. advance.

A write is acknowledged only from step 3 on the leader, i.e. after a majority of voters
has it durably in its log. Commit timestamps come from `clock`, which observes every
applied command, and a new leader accepts proposals only once it has applied the first
entry of its own term, so timestamps keep increasing in log order across leader changes.

Proposals queued during one turn of the event loop go into the log together (one append,
one AppendEntries per follower), and followers learn a new commit index from the next
AppendEntries or heartbeat rather than from a message of its own.

Entry payloads: b"" is the new leader's no-op; b"C" + a command (txn/command.py).

The group's parts live beside it, as mixins over the state that `RaftGroup.__init__`
sets up (each declares the fields it uses): proposals and their apply
(replica/proposals.py), snapshots (replica/snapshots.py), ReadIndex reads
(replica/reads.py), members, peer identity and leadership transfer
(replica/membership.py), the status report (replica/status.py). The WAL sync thread is
replica/walsync.py; the keys and frame kinds, replica/layout.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from collections.abc import Callable
from typing import Any

from zonestore_node.raft import messages as rmsg
from zonestore_node.raft.core import Config, Role
from zonestore_node.raft.node import Node, Ready
from zonestore_node.raft.storage import bootstrap_log
from zonestore_node.replica.config import SNAPSHOT_EVERY, SNAPSHOT_KEEP, GroupConfig
from zonestore_node.replica.errors import NotLeader, OutcomeUnknown, ProposalLost
from zonestore_node.replica.layout import (
    APPLIED_KEY,
    APPLIED_VALUE,
    COMMIT_PREFIX,
    FRAME_RAFT,
    FRAME_SNAP,
    GROUP_ID_KEY,
    PEERS_KEY,
    STATE_FAMILIES,
)
from zonestore_node.replica.membership import MembershipMixin, PeerInfo, hand_off_target
from zonestore_node.replica.proposals import ApplyFn, DecodeFn, ProposalMixin, TouchesFn
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.replica.reads import ReadIndexMixin
from zonestore_node.replica.snapshots import SNAP_CHUNK_BYTES, IncomingSnapshot, SnapshotMixin
from zonestore_node.replica.status import StatusMixin
from zonestore_node.replica.transport import PeerTls, Transport
from zonestore_node.replica.walsync import SyncPolicy, SyncThread
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family
from zonestore_node.txn.clock import ClockGuard

# What importers found here before the group's parts moved out (re-exported).
__all__ = [
    "APPLIED_KEY",
    "COMMIT_PREFIX",
    "FRAME_RAFT",
    "FRAME_SNAP",
    "GROUP_ID_KEY",
    "PEERS_KEY",
    "SNAPSHOT_EVERY",
    "SNAPSHOT_KEEP",
    "SNAP_CHUNK_BYTES",
    "STATE_FAMILIES",
    "ApplyFn",
    "DecodeFn",
    "GroupConfig",
    "GroupStats",
    "NotLeader",
    "OutcomeUnknown",
    "PeerInfo",
    "ProposalLost",
    "RaftGroup",
    "TouchesFn",
    "hand_off_target",
]

log = logging.getLogger("zonestore.replica")


def _touches_anything(command: Any) -> frozenset[bytes] | None:
    return None


class GroupStats:
    __slots__ = ("groups", "leader_changes")

    def __init__(self) -> None:
        self.groups = 0
        self.leader_changes = 0


class RaftGroup(ProposalMixin, SnapshotMixin, ReadIndexMixin, MembershipMixin, StatusMixin):
    def __init__(
        self,
        config: GroupConfig,
        engine: Engine,
        store: mvcc.Store,
        apply: ApplyFn,
        decode: DecodeFn,
        clock: Any,
        rng: random.Random | None = None,
        touches: TouchesFn | None = None,
        clock_guard: ClockGuard | None = None,
    ) -> None:
        self.config = config
        self.clock_guard = clock_guard
        self.engine = engine
        self.store = store
        self._apply = apply
        self._decode = decode
        self._touches: TouchesFn = touches or _touches_anything
        self.clock = clock
        self.stats = GroupStats()
        self.storage = RocksLogStorage(engine)
        stored = engine.get(Family.META, APPLIED_KEY)
        self.applied_index: int = 0
        self.applied_ts: int = 0
        if stored:
            self.applied_index, self.applied_ts = APPLIED_VALUE.unpack(stored)
        self.clock.observe(self.applied_ts)
        # Bytes of log entries applied since the last snapshot (SnapshotMixin).
        self.applied_bytes_since_snapshot = self._held_bytes(
            self.storage.snapshot().metadata.index, self.applied_index
        )
        if self.storage.is_empty and not config.join:
            self._bootstrap()
        self.node = Node(
            Config(
                id=config.node_id,
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
                applied=self.applied_index,
                eager_commit_broadcast=False,
            ),
            self.storage,
            rng or random.Random(),
        )
        self.peers: dict[str, PeerInfo] = {
            config.node_id: PeerInfo(
                config.client_addr, config.admin_addr, config.zone, time.time()
            )
        }
        self._address_book: dict[str, list[str]] = {}
        # A replica of another group (a restored copy, or the group a copy came from,
        # reusing ids and addresses) must never take part: frames from a peer whose hello
        # names another group are dropped, unless one side is empty (a joining replica,
        # which adopts the group id with its first snapshot).
        self.group_id = (engine.get(Family.META, GROUP_ID_KEY) or b"").decode()
        self._foreign: set[str] = set()
        self.transport = Transport(
            config.node_id,
            config.peer_addr,
            self._on_frame,
            self._on_unreachable,
            tls=PeerTls(config.peer_tls) if config.peer_tls is not None else None,
            hello={
                "client": config.client_addr,
                "admin": config.admin_addr,
                "zone": config.zone,
                # How to reach this replica: a replica added at run time knows the
                # founding voters' addresses from nowhere else (membership._on_hello).
                "peer": config.advertise_peer_addr if config.peer_addr else "",
                "group": self.group_id,
                "fresh": "1" if self.storage.is_empty else "",
            },
            on_hello=self._on_hello,
            on_clock=clock_guard.observe if clock_guard is not None else None,
        )
        for peer, addr in config.initial_cluster.items():
            self.transport.set_address(peer, addr)
        self._load_address_book()
        # One snapshot stream per peer at a time: the core asks again (after each report)
        # while a follower is behind, and overlapping streams interleave their chunks.
        self._snapshot_tasks: dict[str, asyncio.Task[None]] = {}
        # Snapshot streams from the leader: the one arriving now, and the complete ones
        # an InstallSnapshot may name. A complete staging is never replaced by a resend
        # of the same snapshot, and one whose InstallSnapshot was stepped (`_claimed`)
        # is kept until the driver has handled every Ready: the leader resends a snapshot
        # while the follower has yet to install the first copy (jepsen split r5: the
        # resend's first chunk discarded the staging the pending Ready was about to
        # restore, and the group died with "snapshot 800 is not staged").
        self._receiving: IncomingSnapshot | None = None
        self._staged: dict[int, IncomingSnapshot] = {}
        self._claimed: set[int] = set()
        self._streams = 0
        for stale in self.engine.path.parent.glob("snapshot-incoming*"):
            shutil.rmtree(stale, ignore_errors=True)  # a transfer a crash interrupted
        self.snapshots_sent = 0
        self.snapshots_received = 0
        self._wake = asyncio.Event()
        self._sync_thread = SyncThread(self._timed_sync)
        self._sync_policy = SyncPolicy()
        # Proposed here: log index -> (term, future, the command as proposed). Applying
        # an entry this leader proposed in that term uses the command object instead of
        # decoding the entry's bytes again (they encode exactly that object).
        self._pending: dict[int, tuple[int, asyncio.Future[Any], Any]] = {}
        self._proposals: list[tuple[bytes, asyncio.Future[Any], Any]] = []
        self._reads_waiting: list[asyncio.Future[int]] = []  # not yet in a ReadIndex round
        self._read_rounds: dict[bytes, list[asyncio.Future[int]]] = {}
        self._read_round_started: dict[bytes, float] = {}
        self._reads_applying: list[tuple[int, list[asyncio.Future[int]]]] = []
        self._read_seq = 0
        self.role = Role.FOLLOWER
        self.leader = ""
        self.term_start_index = 0  # index of this leader's no-op; proposals wait for it
        self._leader_ready = asyncio.Event()
        self._closed = False
        hard = self.storage.hard_state
        self._durable_term_vote = (hard.term, hard.vote)
        # Told of every log fsync: (seconds, entries it made durable). For metrics.
        self.on_sync: Callable[[float, int], None] | None = None
        # Called after every Ready, and after a pass of the driver loop that had none (a
        # tick, a message): who leads, and whether this replica serves, change only there.
        self.on_pass: Callable[[], None] | None = None

    # Setup ----------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        voters = frozenset(self.config.initial_cluster) or frozenset({self.config.node_id})
        hard, entries = bootstrap_log(rmsg.ConfState(voters=voters))
        batch = self.engine.batch()
        self.storage.append(entries, batch)
        self.storage.set_hard_state(hard, batch)
        self.engine.write(batch)
        self.engine.sync_wal()
        log.info("replica.bootstrapped node=%s voters=%s", self.config.node_id, sorted(voters))

    # Views used by the service and the admin API --------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def read_ts(self) -> int:
        """The newest applied commit timestamp: what an eventual read on this replica sees."""
        return self.applied_ts

    def leadership(self) -> str:
        """Who leads in which term, as this replica sees it (tags transaction ids)."""
        return f"{self.leader}/{self.node.raft.term}"

    def leader_client_addr(self) -> str | None:
        info = self.peers.get(self.leader)
        return info.client_addr if info and info.client_addr else None

    # Leadership -------------------------------------------------------------------------

    def check_leader(self) -> None:
        """Raise NotLeader unless this replica can take writes and strong reads now: it
        leads, has applied its term's first entry, and is not handing leadership over."""
        if (
            self.role is not Role.LEADER
            or not self._leader_ready.is_set()
            or self.node.raft.lead_transferee
        ):
            raise NotLeader(self.leader or None)

    async def wait_leader_ready(self) -> None:
        await self._leader_ready.wait()

    # Network -----------------------------------------------------------------------------

    def _on_frame(self, peer: str, kind: int, body: Any) -> None:
        if peer in self._foreign:
            return
        if kind == FRAME_SNAP:
            self._on_snapshot_chunk(peer, body)
            return
        if kind != FRAME_RAFT:
            return
        try:
            msg = rmsg.from_wire(body)
        except rmsg.WireError as exc:
            log.warning("replica.bad_message peer=%s error=%s", peer, exc)
            return
        if msg.type is rmsg.MessageType.INSTALL_SNAPSHOT and not self._staged_for(msg):
            log.warning("replica.snapshot_incomplete peer=%s; waiting for a resend", peer)
            return
        info = self.peers.setdefault(peer, PeerInfo())
        info.last_contact = time.time()
        self.node.step(msg)
        self._wake.set()

    def _on_unreachable(self, peer: str) -> None:
        self.node.report_unreachable(peer)

    # The driver loop -------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until `close()`: the ticker and the driver loop, then the transport."""
        await self.transport.start()
        ticker = asyncio.get_running_loop().create_task(self._ticker(), name="raft-ticker")
        try:
            await self._loop()
        finally:
            tasks = [ticker, *self._snapshot_tasks.values()]
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._sync_thread.close()
            await self.transport.close()

    async def _ticker(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.tick_seconds)
            self.node.tick()
            self._retry_stale_reads()
            self._wake.set()

    async def _loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if self._proposals:
                self._propose_queued()
            handled = False
            while self.node.has_ready():
                rd = self.node.ready()
                await self._handle(rd)
                self.node.advance(rd)
                handled = True
                # Per Ready, not per pass: under load Readies follow each other in one pass.
                if self.on_pass is not None:
                    self.on_pass()
            if not handled and self.on_pass is not None:
                self.on_pass()
            if self._claimed:
                # Every stepped InstallSnapshot has been through a Ready by now (frames
                # are stepped only between awaits, and none is left): the core took it
                # or ignored it.
                self._claimed.clear()
                self._drop_staged(lambda index: index <= self.applied_index)
        self._fail_pending()

    async def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        # 1. persist
        batch = self.engine.batch()
        if rd.snapshot is not None:
            self._restore(rd.snapshot, batch)
        self.storage.append(rd.entries, batch)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state, batch)
        self.engine.write(batch)
        if rd.snapshot is not None:
            self._after_restore(rd.snapshot)
        # Thesis §10.2.1: a leader may replicate its new entries while it persists them,
        # as long as its term and vote are already durable (it counts itself in a quorum
        # only through entries; clients hear back only after step 3, i.e. after this
        # fsync). A follower must persist before it acknowledges: never early.
        early = self.role is Role.LEADER and rd.snapshot is None and not self._vote_changed(rd)
        if early:
            self._send(rd.messages)
        if rd.must_sync:
            # A snapshot's batch is the whole state: never synced on the loop.
            if rd.snapshot is None and self._sync_policy.inline(len(rd.entries)):
                elapsed = self._timed_sync()
            else:
                elapsed = await self._sync_thread()
            self._sync_policy.observe(elapsed)
            self.stats.groups += 1
            if self.on_sync is not None:
                self.on_sync(elapsed, len(rd.entries))
        # 2. send
        if not early:
            self._send(rd.messages)
        # 3. apply
        if rd.committed_entries:
            self._apply_entries(rd.committed_entries)
        for rs in rd.read_states:
            waiters = self._read_rounds.pop(rs.request_ctx, None)
            self._read_round_started.pop(rs.request_ctx, None)
            if waiters:
                self._reads_applying.append((rs.index, waiters))
        self._release_reads()
        if not self._read_rounds and self._reads_waiting:
            self._start_read_round()

    def _timed_sync(self) -> float:
        """The WAL fdatasync, timed where it runs (not the thread handoff around it)."""
        started = time.perf_counter()
        self.engine.sync_wal()
        return time.perf_counter() - started

    def _vote_changed(self, rd: Ready) -> bool:
        hs = rd.hard_state
        if hs is None:
            return False
        changed = (hs.term, hs.vote) != self._durable_term_vote
        self._durable_term_vote = (hs.term, hs.vote)
        return changed

    def _send(self, messages: list[rmsg.Message]) -> None:
        for msg in messages:
            if msg.type is rmsg.MessageType.INSTALL_SNAPSHOT:
                running = self._snapshot_tasks.get(msg.to)
                if running is not None and not running.done():
                    continue  # the running stream reports when it ends
                task = asyncio.get_running_loop().create_task(self._send_snapshot(msg))
                self._snapshot_tasks[msg.to] = task
            else:
                self.transport.send(msg.to, FRAME_RAFT, rmsg.to_wire(msg))

    def _on_soft_state(self, rd: Ready) -> None:
        assert rd.soft_state is not None
        was_leader = self.role is Role.LEADER
        old_leader = self.leader
        self.role = rd.soft_state.role
        self.leader = rd.soft_state.lead
        if self.leader != old_leader:
            self.stats.leader_changes += 1
            log.info(
                "raft.leader_changed node=%s leader=%s term=%d role=%s",
                self.config.node_id,
                self.leader or "-",
                self.node.raft.term,
                self.role.value,
            )
        if self.role is Role.LEADER and not was_leader:
            self.term_start_index = self.node.raft.log.last_index()
            self._leader_ready.clear()
        elif self.role is not Role.LEADER and was_leader:
            self._leader_ready.clear()
            self._fail_reads(NotLeader(self.leader or None))
        if self.leader != old_leader and not was_leader and self._read_rounds:
            self._requeue_reads()  # a follower's rounds went to the old leader

    def close(self) -> None:
        self._closed = True
        self._wake.set()
