"""The replica group: drives the pure Raft core with real time, disk and network.

Owns the driver loop and the order of its steps, for every `Ready` (raft/node.py):

    1. persist   entries, hard state (and snapshot) into RocksDB, then one WAL
                 fdatasync in the sync thread when the Ready says so (it releases the
                 GIL; proposals arriving meanwhile join the next Ready: group commit);
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

Snapshots. The state machine lives in the same database as the log, so a snapshot is
a RocksDB checkpoint (hard links, milliseconds) taken right after applying its index,
under <data>/snapshots/<index>. A replica too far behind gets it streamed in chunks
(FRAME_SNAP frames: every key of the state families) and then the InstallSnapshot
message; it stages the chunks in a database of its own and steps the message only once
the staging is complete, then replaces its state in one atomic RocksDB batch together
with the log's snapshot record. Every SNAPSHOT_EVERY applied entries a snapshot is taken
and the log compacted, keeping SNAPSHOT_KEEP entries for followers that are only a
little behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import random
import shutil
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from zonestore_node.model import vectors
from zonestore_node.raft import messages as rmsg
from zonestore_node.raft.confchange import ConfChange, ConfChangeError
from zonestore_node.raft.core import Config, ProposalDropped, Role
from zonestore_node.raft.node import Node, Ready
from zonestore_node.raft.storage import bootstrap_log
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.replica.transport import PeerTls, TlsFiles, Transport
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family, WriteBatch
from zonestore_node.txn.clock import ClockGuard

log = logging.getLogger("zonestore.replica")

APPLIED_KEY = b"raft/applied"
COMMIT_PREFIX = b"C"
FRAME_RAFT = 1
FRAME_SNAP = 2
PEERS_KEY = b"raft/peers"
# The group's identity: state (so a snapshot carries it to a new replica), written by
# `zonestore restore` (backup/restore.py); empty for groups founded without one.
GROUP_ID_KEY = b"group/id"
SNAPSHOT_EVERY = 20_000
SNAPSHOT_KEEP = 5_000
SNAP_CHUNK_BYTES = 512 * 1024
STATE_FAMILIES = (Family.ENTITIES, Family.INDEXES, Family.META)
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")

ApplyFn = Callable[[mvcc.Store, Any, WriteBatch], Any]
DecodeFn = Callable[[bytes], Any]
# The keys applying a command reads and writes (any bytes naming them; compared only
# with other commands' keys), or None when it may read anything.
TouchesFn = Callable[[Any], "frozenset[bytes] | None"]


def _touches_anything(command: Any) -> frozenset[bytes] | None:
    return None


class NotLeader(Exception):
    """This replica cannot take the request; `leader` names who can (None: unknown)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalLost(Exception):
    """The proposal was overwritten by another leader's entry: it did not take effect."""


class OutcomeUnknown(Exception):
    """The proposal is in the log but its fate cannot be learned here: it may commit."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    node_id: str
    zone: str
    peer_addr: str  # where this replica listens for peers
    advertise_peer_addr: str  # how peers reach it
    client_addr: str
    admin_addr: str
    initial_cluster: dict[str, str] = field(
        default_factory=dict
    )  # founding voters: id -> peer addr
    join: bool = False  # start empty and wait to be added by the leader
    tick_seconds: float = 0.05
    election_tick: int = 10  # ticks: 0.5-1 s randomized
    heartbeat_tick: int = 1
    snapshot_every: int = SNAPSHOT_EVERY
    snapshot_keep: int = SNAPSHOT_KEEP
    # TEST ONLY: serve strong reads from whatever this replica has applied, with no
    # ReadIndex round and on followers too. A deliberately broken build, for showing that
    # the consistency tests catch stale reads. Never set it in production.
    unsafe_local_reads: bool = False
    # Mutual TLS between replicas (replica/transport.py); None: cleartext.
    peer_tls: TlsFiles | None = None


@dataclass(slots=True)
class PeerInfo:
    client_addr: str = ""
    admin_addr: str = ""
    zone: str = ""
    last_contact: float = 0.0


class _IncomingSnapshot:
    """A snapshot being received: chunks staged in a database of their own."""

    def __init__(self, index: int, applied_ts: int, path: Path) -> None:
        if path.exists():
            shutil.rmtree(path)
        self.index = index
        self.applied_ts = applied_ts
        self.path = path
        self.engine = Engine(path)
        self.next_seq = 0
        self.complete = False

    def discard(self) -> None:
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)


def _settle(future: asyncio.Future[float], result: float, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def hand_off_target(
    progress: dict[str, tuple[int, bool]],
    voters: set[str] | frozenset[str],
    last_contact: dict[str, float],
    now: float,
    window_s: float,
) -> str | None:
    """The voter to hand leadership to on a graceful stop: the most caught-up one that
    is alive. Alive is the core's `recent_active`, or a message from it within the
    last `window_s` (an election timeout): check-quorum clears `recent_active` every
    election timeout until the next answer, and a stop landing in that gap must still
    find the followers that answered a moment ago."""
    candidates = [
        (match, member)
        for member, (match, active) in progress.items()
        if member in voters and (active or now - last_contact.get(member, -1e18) <= window_s)
    ]
    return max(candidates)[1] if candidates else None


class _SyncThread:
    """Runs the WAL fdatasync off the event loop: one long-lived thread fed by a queue.

    asyncio.to_thread cost ~70-100 us of CPU per call on these machines (executor
    bookkeeping, a context copy, two chained futures); this hand-off ~30 us, once per
    Ready on every replica. The driver awaits each sync before the next, so at most one
    is queued. Not joined on close, like the default executor's threads were not."""

    def __init__(self, sync: Callable[[], float]) -> None:
        self._sync = sync
        self._queue: queue.SimpleQueue[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[float]] | None
        ] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def __call__(self) -> asyncio.Future[float]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[float] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="wal-sync", daemon=True)
            self._thread.start()
        self._queue.put((loop, future))
        return future

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            loop, future = item
            result, error = 0.0, None
            try:
                result = self._sync()
            except BaseException as exc:  # handed to the driver that awaits it
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(_settle, future, result, error)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread = None


class GroupStats:
    __slots__ = ("groups", "leader_changes")

    def __init__(self) -> None:
        self.groups = 0
        self.leader_changes = 0


class RaftGroup:
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
            self.applied_index, self.applied_ts = _U64x2.unpack(stored)
        self.clock.observe(self.applied_ts)
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
        self._receiving: _IncomingSnapshot | None = None
        self._staged: dict[int, _IncomingSnapshot] = {}
        self._claimed: set[int] = set()
        self._streams = 0
        for stale in self.engine.path.parent.glob("snapshot-incoming*"):
            shutil.rmtree(stale, ignore_errors=True)  # a transfer a crash interrupted
        self.snapshots_sent = 0
        self.snapshots_received = 0
        self._wake = asyncio.Event()
        self._sync_thread = _SyncThread(self._timed_sync)
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

    def _load_address_book(self) -> None:
        raw = self.engine.get(Family.META, PEERS_KEY)
        if not raw:
            return
        self._address_book = msgpack.unpackb(raw, raw=False)
        for peer, (addr, zone) in self._address_book.items():
            if peer not in self.config.initial_cluster:
                self.transport.set_address(peer, addr)
            self.peers.setdefault(peer, PeerInfo()).zone = zone or self.peers[peer].zone

    def _remember_member(self, change: ConfChange, batch: WriteBatch) -> None:
        """Members added at run time come with their address: keep it across restarts."""
        if not change.context:
            return
        try:
            context = msgpack.unpackb(change.context, raw=False)
            addr, zone = str(context.get("peer", "")), str(context.get("zone", ""))
        except (ValueError, TypeError, AttributeError, msgpack.UnpackException):
            return
        if addr:
            self.transport.set_address(change.node_id, addr)
        info = self.peers.setdefault(change.node_id, PeerInfo())
        info.zone = zone or info.zone
        self._address_book[change.node_id] = [addr, zone]
        batch.put(Family.META, PEERS_KEY, msgpack.packb(self._address_book, use_bin_type=True))

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

    # Proposals and reads ----------------------------------------------------------------

    def check_leader(self) -> None:
        """Raise NotLeader unless this replica can take writes and strong reads now: it
        leads, has applied its term's first entry, and is not handing leadership over."""
        if (
            self.role is not Role.LEADER
            or not self._leader_ready.is_set()
            or self.node.raft.lead_transferee
        ):
            raise NotLeader(self.leader or None)

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

    async def wait_leader_ready(self) -> None:
        await self._leader_ready.wait()

    def read_barrier(self) -> asyncio.Future[int]:
        """A linearizable read point (ReadIndex, thesis §6.4): resolves with the commit
        timestamp to read at, once this leader has confirmed its leadership with a
        heartbeat round started after the call and applied up to the read index."""
        if self.config.unsafe_local_reads:
            return self._resolved(self.applied_ts)
        self.check_leader()
        if self.node.conf_state.voters == {self.config.node_id}:
            # A group of one voter: nobody else can lead or commit, so no round is
            # needed. Reading at the applied (not the committed) index is still
            # linearizable: a write is acknowledged only once applied, so every write
            # that completed before this read began is visible.
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
        ctx = _U64.pack(self._read_seq)
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

    def propose_conf_change(self, change: ConfChange) -> asyncio.Future[Any]:
        self.check_leader()
        try:
            index = self.node.propose_conf_change(change)
        except ProposalDropped as exc:
            raise NotLeader(self.leader or None) from exc
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[index] = (self.node.raft.term, future, change)
        self._wake.set()
        return future

    def transfer_leadership(self, target: str) -> None:
        self.check_leader()
        self.node.transfer_leadership(target)
        self._wake.set()

    async def hand_off_leadership(self, within_s: float) -> str | None:
        """On a graceful stop: pass leadership to the most caught-up active voter and
        wait (up to `within_s`) until it leads, so that the group does not sit out an
        election timeout when this replica goes (etcd does the same on a clean stop).
        Returns the new leader, or None when this replica did not lead, had no one to
        hand over to, or the transfer did not finish in time."""
        if self.role is not Role.LEADER:
            return None
        st = self.node.status()
        target = hand_off_target(
            {m: (p.match_index, p.recent_active) for m, p in st.progress.items()},
            st.conf_state.voters - {self.config.node_id},
            {m: info.last_contact for m, info in self.peers.items()},
            time.time(),
            self.config.tick_seconds * self.config.election_tick,
        )
        if target is None:
            return None
        log.info("raft.hand_off node=%s target=%s", self.config.node_id, target)
        self.transfer_leadership(target)
        try:
            async with asyncio.timeout(within_s):
                while self.role is Role.LEADER or not self.leader:  # noqa: ASYNC110 - bounded
                    await asyncio.sleep(0.01)
        except TimeoutError:
            return None
        return self.leader

    # Network -----------------------------------------------------------------------------

    def _on_hello(self, peer: str, meta: Any) -> None:
        if isinstance(meta, dict):
            group = str(meta.get("group", ""))
            if group != self.group_id and not meta.get("fresh") and not self.storage.is_empty:
                if peer not in self._foreign:
                    log.error(
                        "replica.foreign_peer peer=%s group=%r ours=%r: refusing its traffic",
                        peer,
                        group,
                        self.group_id,
                    )
                self._foreign.add(peer)
                return
            self._foreign.discard(peer)
            info = self.peers.setdefault(peer, PeerInfo())
            info.client_addr = str(meta.get("client", "")) or info.client_addr
            info.admin_addr = str(meta.get("admin", "")) or info.admin_addr
            info.zone = str(meta.get("zone", "")) or info.zone

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

    def _retry_stale_reads(self) -> None:
        """The core may drop a ReadIndex round (a lost heartbeat): start it again."""
        limit = self.config.tick_seconds * self.config.election_tick
        now = time.monotonic()
        stale = [ctx for ctx, t in self._read_round_started.items() if now - t > limit]
        for ctx in stale:
            self._read_round_started.pop(ctx, None)
            self._reads_waiting.extend(self._read_rounds.pop(ctx, []))
        if stale and self.role is Role.LEADER:
            self._start_read_round()

    async def _loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            if self._proposals:
                self._propose_queued()
            while self.node.has_ready():
                rd = self.node.ready()
                await self._handle(rd)
                self.node.advance(rd)
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
            elapsed = await self._sync_thread()
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
        batch.put(Family.META, APPLIED_KEY, _U64x2.pack(self.applied_index, self.applied_ts))
        self.engine.write(batch)
        for (term, future, _), entry_term, result in settle:
            if not future.done():
                if term == entry_term:
                    future.set_result(result)
                else:
                    future.set_exception(ProposalLost("overwritten by a new leader"))
        settle.clear()
        return self.engine.batch()

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

    # Snapshots ------------------------------------------------------------------------

    @property
    def _snapshots_dir(self) -> Path:
        return self.engine.path.parent / "snapshots"

    def _checkpoint_dir(self, index: int) -> Path:
        return self._snapshots_dir / f"{index:020d}"

    def _checkpoint(self, index: int) -> None:
        """A checkpoint of the state as of `index` (call right after applying it)."""
        target = self._checkpoint_dir(index)
        self._snapshots_dir.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        self.engine.checkpoint(target)
        for old in self._snapshots_dir.iterdir():
            if old != target:
                shutil.rmtree(old, ignore_errors=True)

    def take_snapshot(self) -> int:
        """Snapshot the applied state and compact the log behind it; returns its index."""
        index = self.applied_index
        current = self.storage.snapshot().metadata.index
        if index <= current and self._checkpoint_dir(current).exists():
            return current
        conf = self.node.conf_state_at(index)
        self._checkpoint(index)
        batch = self.engine.batch()
        if index > current:
            self.storage.create_snapshot(index, conf, batch)
        compact_to = index - self.config.snapshot_keep
        if compact_to >= self.storage.first_index():
            self.storage.compact(compact_to, batch)
        self.engine.write(batch)
        log.info("raft.snapshot_taken node=%s index=%d", self.config.node_id, index)
        return index

    async def _send_snapshot(self, msg: rmsg.Message) -> None:
        assert msg.snapshot is not None
        peer, index = msg.to, msg.snapshot.metadata.index
        try:
            path = self._checkpoint_dir(index)
            if not path.exists():
                self.take_snapshot()  # the snapshot came from a leader: checkpoint now
                raise FileNotFoundError(f"no checkpoint for snapshot {index}; took a new one")
            source = Engine(path, read_only=True)
            try:
                applied_ts = 0
                raw = source.get(Family.META, APPLIED_KEY)
                if raw:
                    applied_ts = _U64x2.unpack(raw)[1]
                seq = 0
                for family in STATE_FAMILIES:
                    items: list[list[bytes]] = []
                    size = 0
                    it = source.iterator(family)
                    it.seek(b"")
                    while it.valid():
                        key = it.key()
                        if not (family is Family.META and key.startswith(b"raft/")):
                            value = it.value()
                            items.append([key, value])
                            size += len(key) + len(value)
                        it.next()
                        if size >= SNAP_CHUNK_BYTES:
                            await self.transport.send_paced(
                                peer,
                                FRAME_SNAP,
                                [index, applied_ts, seq, family.value, items, False],
                            )
                            seq, items, size = seq + 1, [], 0
                    if items:
                        await self.transport.send_paced(
                            peer, FRAME_SNAP, [index, applied_ts, seq, family.value, items, False]
                        )
                        seq += 1
                await self.transport.send_paced(
                    peer, FRAME_SNAP, [index, applied_ts, seq, Family.META.value, [], True]
                )
            finally:
                source.close()
            self.transport.send(peer, FRAME_RAFT, rmsg.to_wire(msg))
            self.snapshots_sent += 1
            self.node.report_snapshot(peer, failure=False)
            log.info(
                "raft.snapshot_sent node=%s peer=%s index=%d", self.config.node_id, peer, index
            )
        except Exception as exc:
            log.warning("raft.snapshot_send_failed peer=%s index=%d error=%s", peer, index, exc)
            self.node.report_snapshot(peer, failure=True)
        self._wake.set()

    def _on_snapshot_chunk(self, peer: str, body: Any) -> None:
        try:
            index, applied_ts, seq, family, items, last = body
            if seq == 0:
                if index in self._staged or index <= self.applied_index:
                    return  # a resend of what is staged, or older than the state: skip it
                self._drop_receiving()
                self._streams += 1
                path = self.engine.path.parent / f"snapshot-incoming-{index}-{self._streams}"
                self._receiving = _IncomingSnapshot(index, applied_ts, path)
            incoming = self._receiving
            if incoming is None or incoming.index != index or incoming.next_seq != seq:
                if incoming is not None and incoming.index == index:
                    self._drop_receiving()  # a gap: this stream is lost, wait for a resend
                return
            batch = incoming.engine.batch()
            for key, value in items:
                batch.put(Family(family), key, value)
            incoming.engine.write(batch)
            incoming.next_seq += 1
            if last:
                incoming.complete = True
                self._receiving = None
                self._staged[index] = incoming
                # Older stagings are superseded, unless a pending Ready still names one.
                self._drop_staged(lambda i: i < index and i not in self._claimed)
        except Exception as exc:  # a bad chunk or a staging failure must not kill the link
            log.warning("replica.bad_snapshot_chunk peer=%s error=%s", peer, exc)
            self._drop_receiving()

    def _drop_receiving(self) -> None:
        if self._receiving is not None:
            self._receiving.discard()
            self._receiving = None

    def _drop_staged(self, which: Callable[[int], bool]) -> None:
        for index in [i for i in self._staged if which(i)]:
            self._staged.pop(index).discard()

    def _staged_for(self, msg: rmsg.Message) -> bool:
        """Whether the snapshot an InstallSnapshot names is staged; if so it is claimed
        (kept) until the Ready that may carry it has been handled."""
        assert msg.snapshot is not None
        index = msg.snapshot.metadata.index
        if index not in self._staged:
            return False
        self._claimed.add(index)
        return True

    def _restore(self, snap: rmsg.Snapshot, batch: WriteBatch) -> None:
        """Replace the state machine by the staged snapshot, in the same batch as the
        log's snapshot record: one atomic RocksDB write, so a crash leaves either the old
        state and log or the new ones."""
        index = snap.metadata.index
        incoming = self._staged.get(index)
        if incoming is None:
            raise RuntimeError(f"snapshot {index} is not staged")
        for family in (Family.ENTITIES, Family.INDEXES):
            batch.delete_range(family, b"", b"\xff" * 64)
        it = self.engine.iterator(Family.META)
        it.seek(b"")
        while it.valid():
            if not it.key().startswith(b"raft/"):
                batch.delete(Family.META, it.key())
            it.next()
        for family in STATE_FAMILIES:
            it = incoming.engine.iterator(family)
            it.seek(b"")
            while it.valid():
                batch.put(family, it.key(), it.value())
                it.next()
        self.storage.apply_snapshot(snap, batch)
        self.applied_index = index
        self.applied_ts = max(self.applied_ts, incoming.applied_ts)
        self.clock.observe(self.applied_ts)
        batch.put(Family.META, APPLIED_KEY, _U64x2.pack(self.applied_index, self.applied_ts))
        batch.put(Family.META, PEERS_KEY, msgpack.packb(self._address_book, use_bin_type=True))

    def _after_restore(self, snap: rmsg.Snapshot) -> None:
        self.group_id = (self.engine.get(Family.META, GROUP_ID_KEY) or b"").decode()
        self.transport.hello.update(group=self.group_id, fresh="")
        vectors.reset(self.engine)  # in-memory vector matrices rebuild from the new state
        self._drop_staged(lambda index: index <= snap.metadata.index)
        self.snapshots_received += 1
        with contextlib.suppress(OSError):
            self._checkpoint(snap.metadata.index)
        log.info(
            "raft.snapshot_installed node=%s index=%d", self.config.node_id, snap.metadata.index
        )

    # Status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.node.status()
        now = time.time()
        members = []
        conf = st.conf_state
        for member in sorted(conf.members()):
            info = self.peers.get(member, PeerInfo())
            progress = st.progress.get(member)
            match = progress.match_index if progress else 0
            members.append(
                {
                    "id": member,
                    "peer_address": self.transport.addresses.get(
                        member,
                        self.config.advertise_peer_addr if member == self.config.node_id else "",
                    ),
                    "client_address": info.client_addr,
                    "admin_address": info.admin_addr,
                    "zone": info.zone,
                    "role": "voter" if member in conf.voters else "learner",
                    "match_index": match,
                    "lag": max(0, st.commit_index - match) if progress else None,
                    "last_contact_ms": int((now - info.last_contact) * 1000)
                    if info.last_contact
                    else None,
                    "healthy": True
                    if member == self.config.node_id
                    else (bool(progress.recent_active) if progress else None),
                }
            )
        role = st.role.value
        if self.config.node_id not in conf.voters:
            role = "learner"  # a learner, or a joining replica not yet added
        return {
            "node_id": self.config.node_id,
            "zone": self.config.zone,
            "role": role,
            "term": st.term,
            "leader": st.lead or None,
            "commit_index": st.commit_index,
            "applied_index": self.applied_index,
            "last_index": st.last_index,
            "applied_ts": self.applied_ts,
            "group_id": self.group_id,
            "clock_offset_ms": (
                self.clock_guard.offset_us() / 1000 if self.clock_guard is not None else 0.0
            ),
            "members": members,
        }

    def close(self) -> None:
        self._closed = True
        self._wake.set()
