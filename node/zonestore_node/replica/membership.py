"""Who is in a replica group and who leads it: members, their addresses, hand-offs.

Owns the peers this replica knows (addresses and zones from each peer's hello, run-time
members' peer addresses from their conf change, kept in the META family across
restarts), the group identity check on hello, conf change proposals, and leadership
transfer, including the hand-off on a graceful stop.

`MembershipMixin` is a part of `RaftGroup` (replica/group.py), which owns the state
named here. Must not import replica/group.py (it imports this).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from zonestore_node.raft.confchange import ConfChange
from zonestore_node.raft.core import ProposalDropped, Role
from zonestore_node.raft.node import Node
from zonestore_node.replica.config import GroupConfig
from zonestore_node.replica.errors import NotLeader
from zonestore_node.replica.layout import PEERS_KEY
from zonestore_node.replica.raftlog import RocksLogStorage
from zonestore_node.replica.transport import Transport
from zonestore_node.storage.engine import Engine, Family, WriteBatch

log = logging.getLogger("zonestore.replica")


@dataclass(slots=True)
class PeerInfo:
    client_addr: str = ""
    admin_addr: str = ""
    zone: str = ""
    last_contact: float = 0.0


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


@dataclass(frozen=True, slots=True)
class Outsider:
    """This replica is not in the configuration its data folder holds (neither voter nor
    learner), so it only waits for a leader to add it."""

    node_id: str
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    # The folder as `zonestore restore` left it (backup/restore.py: a log snapshot of one
    # voter, term 1, no entry since): a new group that only that voter can ever serve.
    fresh_restore: bool
    reachable: bool  # peers can dial it (--peer-addr); without, nobody can add it

    @property
    def hopeless(self) -> bool:
        """No leader can ever add it: refuse to start rather than wait forever."""
        return self.fresh_restore or not self.reachable

    @property
    def why_hopeless(self) -> str:
        if self.fresh_restore:
            return "a restored folder is a new group that only its own voter can serve"
        return "without --peer-addr no leader can reach it"

    def describe(self) -> str:
        learners = f", learners: {', '.join(self.learners)}" if self.learners else ""
        return (
            f"this replica ({self.node_id}) is not a member of the group in its data folder "
            f"(voters: {', '.join(self.voters)}{learners})"
        )

    def advice(self, data_dir: str) -> str:
        if len(self.voters) == 1:
            [voter] = self.voters
            if self.fresh_restore:
                return f"{data_dir} was restored for --node-id {voter}: serve it with that id"
            return f"serve {data_dir} with --node-id {voter}"
        return (
            f"serve {data_dir} with the --node-id of one of its voters, or give --peer-addr "
            f"and add this replica with `zonestore members add {self.node_id}`"
        )


class MembershipMixin:
    """Members, peer identity and leadership transfer, for `RaftGroup`."""

    # State owned by RaftGroup (see its __init__).
    config: GroupConfig
    engine: Engine
    storage: RocksLogStorage
    node: Node
    transport: Transport
    role: Role
    leader: str
    group_id: str
    peers: dict[str, PeerInfo]
    _address_book: dict[str, list[str]]
    _foreign: set[str]
    _pending: dict[int, tuple[int, asyncio.Future[Any], Any]]
    _wake: asyncio.Event
    check_leader: Callable[[], None]

    def outsider(self) -> Outsider | None:
        """Why this replica is outside its folder's configuration, or None when it is a
        member (or holds no configuration yet: a replica started with --join)."""
        conf = self.node.status().conf_state
        me = self.config.node_id
        if me in conf.voters or me in conf.learners or not conf.voters:
            return None
        snapshot = self.storage.snapshot().metadata
        fresh = (
            len(conf.voters) == 1
            and not conf.learners
            and snapshot.index > 0
            and self.storage.last_index() == snapshot.index
            and self.storage.hard_state.term == 1
        )
        return Outsider(
            me,
            tuple(sorted(conf.voters)),
            tuple(sorted(conf.learners)),
            fresh,
            bool(self.config.peer_addr),
        )

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
            addr = str(meta.get("peer", ""))
            if addr and peer not in self.transport.addresses:
                # A founding voter (its address was in --initial-cluster, never in the
                # log) dialling a replica added at run time: the way back to it.
                self.transport.set_address(peer, addr)
                log.info("replica.peer_learned peer=%s addr=%s", peer, addr)
            info = self.peers.setdefault(peer, PeerInfo())
            info.client_addr = str(meta.get("client", "")) or info.client_addr
            info.admin_addr = str(meta.get("admin", "")) or info.admin_addr
            info.zone = str(meta.get("zone", "")) or info.zone
