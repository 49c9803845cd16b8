"""The replica group: drives the pure Raft core with real time, disk and network.

Owns the driver loop and the order of its steps, for every `Ready` (raft/node.py):

    1. persist   entries, hard state (and snapshot) into RocksDB, then one WAL
                 fdatasync in a worker thread when the Ready says so (it releases the
                 GIL; proposals arriving meanwhile join the next Ready: group commit);
    2. send      the messages, only now that what they promise is durable;
    3. apply     committed entries in log order through the injected state machine
                 (`apply`), one RocksDB batch per command, the applied index and commit
                 timestamp written in the same batch; then release proposal results and
                 linearizable reads whose read index has been applied;
    4. advance.

A write is acknowledged only from step 3 on the leader, i.e. after a majority of voters
has it durably in its log. Commit timestamps come from `clock`, which observes every
applied command, and a new leader accepts proposals only once it has applied the first
entry of its own term, so timestamps keep increasing in log order across leader changes.

Entry payloads: b"" is the new leader's no-op; b"C" + CommitCommand bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zonestore_node.raft import messages as rmsg
from zonestore_node.raft.confchange import ConfChange, ConfChangeError
from zonestore_node.raft.core import Config, ProposalDropped, Role
from zonestore_node.raft.node import Node, Ready
from zonestore_node.raft.storage import bootstrap_log
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.replica.transport import Transport
from zonestore_node.storage import mvcc
from zonestore_node.storage.engine import Engine, Family, WriteBatch

log = logging.getLogger("zonestore.replica")

APPLIED_KEY = b"raft/applied"
MAX_TS_KEY = b"max_commit_ts"
COMMIT_PREFIX = b"C"
FRAME_RAFT = 1
_U64 = struct.Struct(">Q")
_U64x2 = struct.Struct(">QQ")

ApplyFn = Callable[[mvcc.Store, Any, WriteBatch], Any]
DecodeFn = Callable[[bytes], Any]


class NotLeader(Exception):
    """This replica cannot take the request; `leader` names who can (None: unknown)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalLost(Exception):
    """The proposal was overwritten by another leader's entry: it did not take effect."""


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


@dataclass(slots=True)
class PeerInfo:
    client_addr: str = ""
    admin_addr: str = ""
    zone: str = ""
    last_contact: float = 0.0


class GroupStats:
    __slots__ = ("commands", "fsync_seconds", "groups", "last_group_size", "leader_changes")

    def __init__(self) -> None:
        self.groups = 0
        self.commands = 0
        self.last_group_size = 0
        self.fsync_seconds = 0.0
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
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store
        self._apply = apply
        self._decode = decode
        self.clock = clock
        self.stats = GroupStats()
        self.storage = RocksLogStorage(engine)
        stored = engine.get(Family.META, APPLIED_KEY)
        self.applied_index: int = 0
        self.applied_ts: int = 0
        if stored:
            self.applied_index, self.applied_ts = _U64x2.unpack(stored)
        if not stored:
            legacy = engine.get(Family.META, MAX_TS_KEY)
            self.applied_ts = int(_U64.unpack(legacy)[0]) if legacy else 0
        self.clock.observe(self.applied_ts)
        if self.storage.is_empty and not config.join:
            self._bootstrap()
        self.node = Node(
            Config(
                id=config.node_id,
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
                applied=self.applied_index,
            ),
            self.storage,
            rng or random.Random(),
        )
        self.peers: dict[str, PeerInfo] = {
            config.node_id: PeerInfo(
                config.client_addr, config.admin_addr, config.zone, time.time()
            )
        }
        self.transport = Transport(
            config.node_id,
            config.peer_addr,
            self._on_frame,
            self._on_unreachable,
            hello={"client": config.client_addr, "admin": config.admin_addr, "zone": config.zone},
            on_hello=self._on_hello,
        )
        for peer, addr in config.initial_cluster.items():
            self.transport.set_address(peer, addr)
        self._wake = asyncio.Event()
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._reads_waiting: list[asyncio.Future[int]] = []  # not yet in a ReadIndex round
        self._read_rounds: dict[bytes, list[asyncio.Future[int]]] = {}
        self._reads_applying: list[tuple[int, list[asyncio.Future[int]]]] = []
        self._read_seq = 0
        self.role = Role.FOLLOWER
        self.leader = ""
        self.term_start_index = 0  # index of this leader's no-op; proposals wait for it
        self._leader_ready = asyncio.Event()
        self._closed = False

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

    def last_commit_ts(self) -> int:
        return self.applied_ts

    def leader_client_addr(self) -> str | None:
        info = self.peers.get(self.leader)
        return info.client_addr if info and info.client_addr else None

    # Proposals and reads ----------------------------------------------------------------

    def check_leader(self) -> None:
        if self.role is not Role.LEADER or not self._leader_ready.is_set():
            raise NotLeader(self.leader or None)

    def submit(self, command: Any) -> asyncio.Future[Any]:
        """Propose a command; the future resolves with the apply result once committed
        and applied here. Raises NotLeader when this replica cannot propose."""
        self.check_leader()
        try:
            index = self.node.propose(COMMIT_PREFIX + command.encode())
        except ProposalDropped as exc:
            raise NotLeader(self.leader or None) from exc
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[index] = (self.node.raft.term, future)
        self._wake.set()
        return future

    async def wait_leader_ready(self) -> None:
        await self._leader_ready.wait()

    def read_barrier(self) -> asyncio.Future[int]:
        """A linearizable read point (ReadIndex, thesis §6.4): resolves with the commit
        timestamp to read at, once this leader has confirmed its leadership with a
        heartbeat round started after the call and applied up to the read index."""
        self.check_leader()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads_waiting.append(future)
        if not self._read_rounds:
            self._start_read_round()
        return future

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
        self._wake.set()

    def propose_conf_change(self, change: ConfChange) -> asyncio.Future[Any]:
        self.check_leader()
        try:
            index = self.node.propose_conf_change(change)
        except ProposalDropped as exc:
            raise NotLeader(self.leader or None) from exc
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[index] = (self.node.raft.term, future)
        self._wake.set()
        return future

    def transfer_leadership(self, target: str) -> None:
        self.check_leader()
        self.node.transfer_leadership(target)
        self._wake.set()

    # Network -----------------------------------------------------------------------------

    def _on_hello(self, peer: str, meta: Any) -> None:
        if isinstance(meta, dict):
            info = self.peers.setdefault(peer, PeerInfo())
            info.client_addr = str(meta.get("client", "")) or info.client_addr
            info.admin_addr = str(meta.get("admin", "")) or info.admin_addr
            info.zone = str(meta.get("zone", "")) or info.zone

    def _on_frame(self, peer: str, kind: int, body: Any) -> None:
        if kind != FRAME_RAFT:
            return
        try:
            msg = rmsg.from_wire(body)
        except rmsg.WireError as exc:
            log.warning("replica.bad_message peer=%s error=%s", peer, exc)
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
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self.transport.close()

    async def _ticker(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.config.tick_seconds)
            self.node.tick()
            self._wake.set()

    async def _loop(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            while self.node.has_ready():
                rd = self.node.ready()
                await self._handle(rd)
                self.node.advance(rd)
        self._fail_pending(NotLeader(None))

    async def _handle(self, rd: Ready) -> None:
        if rd.soft_state is not None:
            self._on_soft_state(rd)
        # 1. persist
        batch = self.engine.batch()
        if rd.snapshot is not None:
            self.storage.apply_snapshot(rd.snapshot, batch)
        self.storage.append(rd.entries, batch)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state, batch)
        self.engine.write(batch)
        if rd.must_sync:
            started = time.perf_counter()
            await asyncio.to_thread(self.engine.sync_wal)
            self.stats.fsync_seconds += time.perf_counter() - started
            self.stats.groups += 1
            self.stats.last_group_size = len(rd.entries)
        # 2. send
        for msg in rd.messages:
            self.transport.send(msg.to, FRAME_RAFT, rmsg.to_wire(msg))
        # 3. apply
        if rd.committed_entries:
            self._apply_entries(rd.committed_entries)
        for rs in rd.read_states:
            waiters = self._read_rounds.pop(rs.request_ctx, None)
            if waiters:
                self._reads_applying.append((rs.index, waiters))
        self._release_reads()
        if not self._read_rounds and self._reads_waiting:
            self._start_read_round()

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
        for entry in entries:
            result: Any = None
            batch = self.engine.batch()
            if entry.type is rmsg.EntryType.CONF_CHANGE:
                try:
                    change = ConfChange.from_bytes(entry.data)
                    result = change
                except ConfChangeError:
                    result = None
            elif entry.data.startswith(COMMIT_PREFIX):
                command = self._decode(entry.data[1:])
                self.clock.observe(command.commit_ts)
                result = self._apply(self.store, command, batch)
                self.applied_ts = max(self.applied_ts, command.commit_ts)
                self.stats.commands += 1
            self.applied_index = entry.index
            batch.put(Family.META, APPLIED_KEY, _U64x2.pack(self.applied_index, self.applied_ts))
            self.engine.write(batch)
            pending = self._pending.pop(entry.index, None)
            if pending is not None:
                term, future = pending
                if not future.done():
                    if term == entry.term:
                        future.set_result(result)
                    else:
                        future.set_exception(ProposalLost("overwritten by a new leader"))
            if (
                self.role is Role.LEADER
                and entry.index >= self.term_start_index
                and not self._leader_ready.is_set()
            ):
                self._leader_ready.set()
                log.info(
                    "raft.leader_ready node=%s term=%d", self.config.node_id, self.node.raft.term
                )
        # Proposals below the applied index that were never matched are lost.
        for index in [i for i in self._pending if i <= self.applied_index]:
            _, future = self._pending.pop(index)
            if not future.done():
                future.set_exception(ProposalLost("not in the log"))

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
        self._reads_waiting = []
        self._reads_applying = []
        for f in waiting:
            if not f.done():
                f.set_exception(exc)

    def _fail_pending(self, exc: Exception) -> None:
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
        self._fail_reads(exc)

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
                    "healthy": bool(progress.recent_active) if progress else None,
                }
            )
        role = st.role.value
        if self.config.node_id in conf.learners:
            role = "learner"
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
            "members": members,
        }

    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def aclose(self) -> None:
        self.close()
        with contextlib.suppress(Exception):
            await self.transport.close()
