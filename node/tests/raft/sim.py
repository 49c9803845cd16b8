"""A deterministic cluster simulator for the raft core, with safety checkers.

Everything derives from one seed: a seeded `random.Random` drives the network (drop,
delay, reorder, duplicate, cut links, isolate, split), crashes (losing whatever the
driver had not yet persisted, or after a clean flush), restarts, proposals, membership
changes, leadership transfers, ReadIndex requests and compaction. Each node is driven
exactly as the replica layer must drive it: persist, send, apply, advance — but the
driver may *defer* handling a Ready, so a crash can lose unpersisted state.

Checked after every step: election safety, log matching (incrementally on every
persisted entry, and pairwise across all logs periodically), leader completeness (on
every new leader), state machine safety (a hash chain of applied entries per index),
committed entries never replaced, and ReadIndex linearizability (a read index is never
below anything committed before the read was issued). `Cluster.settle` checks liveness.
"""

from __future__ import annotations

import hashlib
import random
from collections import deque
from dataclasses import dataclass

import msgpack

from zonestore_node.raft import (
    ConfChange,
    ConfChangeError,
    ConfChangeOp,
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    Node,
    ProposalDropped,
    Ready,
    Role,
    from_wire,
    to_wire,
)


class SafetyViolation(AssertionError):
    pass


@dataclass(slots=True)
class SimParams:
    pool: int = 5  # processes; members or not
    voters: int = 3  # founding voters
    election_tick: int = 10
    heartbeat_tick: int = 2
    p_drop: float = 0.05
    p_dup: float = 0.02
    max_delay: int = 3
    p_defer_ready: float = 0.25
    p_propose: float = 0.4
    p_crash: float = 0.006
    p_clean_crash: float = 0.004
    p_restart: float = 0.08
    p_partition: float = 0.015
    p_heal: float = 0.03
    p_conf_change: float = 0.02
    p_transfer: float = 0.006
    p_read: float = 0.05
    p_wire_roundtrip: float = 0.05
    snapshot_every: int = 15  # applied entries between snapshots
    keep_after_compact: int = 3
    max_size_per_msg: int = 200
    max_inflight: int = 4
    eager_commit_broadcast: bool = True

    @classmethod
    def random(cls, rng: random.Random) -> SimParams:
        pool = rng.randint(3, 6)
        p = cls(
            pool=pool,
            voters=rng.randint(1, min(pool, 5))
            if rng.random() < 0.1
            else min(pool, rng.choice((3, 3, 5))),
        )
        p.p_drop = rng.choice((0.0, 0.02, 0.1, 0.2))
        p.max_delay = rng.choice((1, 3, 6))
        p.p_crash = rng.choice((0.0, 0.004, 0.01, 0.02))
        p.p_partition = rng.choice((0.005, 0.015, 0.04))
        p.p_defer_ready = rng.choice((0.0, 0.25, 0.5))
        p.p_transfer = rng.choice((0.0, 0.006, 0.02))
        if rng.random() < 0.3:
            # Leader churn: short reigns, quick restarts, commits racing elections —
            # the shape of the paper's Figure 8.
            p.p_crash, p.p_restart, p.max_delay = 0.05, 0.25, rng.choice((2, 5))
            p.p_partition, p.p_heal = 0.05, 0.1
        p.snapshot_every = rng.choice((8, 15, 1000))
        p.eager_commit_broadcast = rng.random() < 0.5  # production runs with False
        return p


def _chain(prev: bytes, e: Entry) -> bytes:
    h = hashlib.blake2b(prev, digest_size=8)
    h.update(b"%d/%d/%d/" % (e.term, e.index, e.type))
    h.update(e.data)
    return h.digest()


class SimNode:
    """One process: a durable MemoryStorage, maybe a running Node, a toy state machine."""

    __slots__ = ("applied", "chain", "id", "node", "storage")

    def __init__(self, nid: str, storage: MemoryStorage) -> None:
        self.id = nid
        self.storage = storage
        self.node: Node | None = None
        self.applied = 0
        self.chain = b"\0" * 8


class Cluster:
    def __init__(self, seed: int, params: SimParams | None = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.p = params or SimParams.random(self.rng)
        self.ids = [f"zs-{i}" for i in range(self.p.pool)]
        founding = ConfState(frozenset(self.ids[: self.p.voters]))
        self.procs: dict[str, SimNode] = {}
        for nid in self.ids:
            st = MemoryStorage.bootstrapped(founding) if nid in founding.voters else MemoryStorage()
            self.procs[nid] = SimNode(nid, st)
        self.now = 0
        self.seq = 0
        self.inflight: list[tuple[int, int, Message]] = []
        self.cut: set[frozenset[str]] = set()
        self.trace: deque[str] = deque(maxlen=60)
        self.proposed = 0
        self.read_seq = 0
        # --- checker state ---
        self.leader_of_term: dict[int, str] = {}
        self.entry_ids: dict[
            tuple[int, int], tuple[bytes, int]
        ] = {}  # (index, term) -> (data, prev term)
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        self.commit_term: dict[int, int] = {}  # index -> lowest term it was seen committed at
        self.max_committed = 0
        self.chain_at: dict[int, bytes] = {}
        self.checked_commit: dict[str, int] = {}
        self.led_term: dict[str, int] = {}
        self.reads: dict[bytes, int] = {}
        self.reads_served = 0
        for nid in self.ids:
            self.start(nid)

    # --- failure reporting ---

    def fail(self, what: str) -> None:
        lines = "\n  ".join(self.trace)
        raise SafetyViolation(
            f"seed={self.seed} t={self.now}: {what}\n  params={self.p}\n  recent:\n  {lines}"
        )

    def note(self, s: str) -> None:
        self.trace.append(f"t={self.now} {s}")

    # --- processes ---

    def start(self, nid: str) -> None:
        proc = self.procs[nid]
        snap = proc.storage.snapshot()
        proc.applied = snap.metadata.index
        proc.chain = self._restore_sm(snap.data) if snap.data else b"\0" * 8
        cfg = Config(
            id=nid,
            election_tick=self.p.election_tick,
            heartbeat_tick=self.p.heartbeat_tick,
            max_size_per_msg=self.p.max_size_per_msg,
            max_inflight_msgs=self.p.max_inflight,
            applied=proc.applied,
            eager_commit_broadcast=self.p.eager_commit_broadcast,
        )
        proc.node = Node(cfg, proc.storage, random.Random(self.rng.random()))
        self.checked_commit[nid] = proc.node.raft.log.commit_index
        self.note(f"start {nid} applied={proc.applied} hs={proc.storage.hard_state}")

    def _restore_sm(self, data: bytes) -> bytes:
        index, chain = msgpack.unpackb(data)
        known = self.chain_at.get(index)
        if known is not None and known != chain:
            self.fail(f"snapshot at {index} holds a different state")
        return bytes(chain)

    def crash(self, nid: str, clean: bool) -> None:
        proc = self.procs[nid]
        if proc.node is None:
            return
        if clean:
            self.drive(nid)
        proc.node = None
        self.note(f"crash {nid} clean={clean}")

    def up(self) -> list[str]:
        return [nid for nid in self.ids if self.procs[nid].node is not None]

    # --- the driver: persist, send, apply, advance ---

    def drive(self, nid: str) -> None:
        proc = self.procs[nid]
        node = proc.node
        assert node is not None
        st = proc.storage
        while node.has_ready():
            rd = node.ready()
            self._check_entries(node, rd)
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            if rd.entries:
                st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            for m in rd.messages:
                self.send(m)
            if rd.snapshot is not None:
                proc.chain = self._restore_sm(rd.snapshot.data)
                proc.applied = rd.snapshot.metadata.index
            for e in rd.committed_entries:
                self._apply(proc, e)
            for rs in rd.read_states:
                floor = self.reads.pop(rs.request_ctx, None)
                if floor is not None and rs.index < floor:
                    self.fail(f"read {rs.request_ctx!r} at {rs.index} misses commit {floor}")
                self.reads_served += 1
            if rd.soft_state is not None:
                self.note(
                    f"{nid} soft {rd.soft_state.role.value} lead={rd.soft_state.lead} term={node.raft.term}"
                )
            node.advance(rd)
            self._maybe_snapshot(proc)
        self._check_node(proc)

    def _apply(self, proc: SimNode, e: Entry) -> None:
        if e.index != proc.applied + 1:
            self.fail(f"{proc.id} applies {e.index} after {proc.applied}")
        proc.chain = _chain(proc.chain, e)
        proc.applied = e.index
        known = self.chain_at.setdefault(e.index, proc.chain)
        if known != proc.chain:
            self.fail(f"state machine safety: {proc.id} applied a different entry at {e.index}")

    def _maybe_snapshot(self, proc: SimNode) -> None:
        st = proc.storage
        node = proc.node
        assert node is not None
        snap_index = st.snapshot().metadata.index
        if proc.applied - snap_index < self.p.snapshot_every:
            return
        data = msgpack.packb([proc.applied, proc.chain])
        st.create_snapshot(proc.applied, node.conf_state_at(proc.applied), data)
        to = proc.applied - self.p.keep_after_compact
        if to >= st.first_index():
            st.compact(to)

    # --- network ---

    def send(self, m: Message) -> None:
        if self.rng.random() < self.p.p_wire_roundtrip:
            back = from_wire(msgpack.unpackb(msgpack.packb(to_wire(m))))
            if back != m:
                self.fail(f"wire round trip changed {m}")
        if frozenset((m.from_, m.to)) in self.cut or self.rng.random() < self.p.p_drop:
            self._dropped(m)
            return
        copies = 2 if self.rng.random() < self.p.p_dup else 1
        for _ in range(copies):
            self.seq += 1
            at = self.now + self.rng.randint(0, self.p.max_delay)
            self.inflight.append((at, self.seq, m))

    def _dropped(self, m: Message) -> None:
        if m.type is MessageType.INSTALL_SNAPSHOT:
            # The transport reports a failed snapshot transfer (etcd's ReportSnapshot).
            sender = self.procs[m.from_].node
            if sender is not None:
                sender.report_snapshot(m.to, failure=True)

    def deliver_due(self) -> None:
        due = [x for x in self.inflight if x[0] <= self.now]
        if not due:
            return
        self.inflight = [x for x in self.inflight if x[0] > self.now]
        self.rng.shuffle(due)  # reorder
        for _, _, m in due:
            proc = self.procs[m.to]
            if proc.node is None or frozenset((m.from_, m.to)) in self.cut:
                self._dropped(m)
                continue
            proc.node.step(m)
            if m.type is MessageType.INSTALL_SNAPSHOT:
                sender = self.procs[m.from_].node
                if sender is not None:
                    sender.report_snapshot(m.to, failure=False)
            self.maybe_drive(m.to)

    def maybe_drive(self, nid: str) -> None:
        if self.rng.random() >= self.p.p_defer_ready:
            self.drive(nid)

    # --- checks ---

    def _check_entries(self, node: Node, rd: Ready) -> None:
        """Log matching, incrementally: an (index, term) names one entry and one prefix."""
        prev_term = None
        for e in rd.entries:
            if prev_term is None:
                prev_term = node.raft.log.term(e.index - 1)
            key = (e.index, e.term)
            val = (e.data, prev_term)
            known = self.entry_ids.setdefault(key, val)
            if known != val:
                self.fail(f"log matching: two different entries at index {e.index} term {e.term}")
            prev_term = e.term

    def _check_node(self, proc: SimNode) -> None:
        node = proc.node
        assert node is not None
        r = node.raft
        if r.role is Role.LEADER:
            holder = self.leader_of_term.setdefault(r.term, proc.id)
            if holder != proc.id:
                self.fail(f"election safety: {holder} and {proc.id} both lead term {r.term}")
            if self.led_term.get(proc.id) != r.term:
                self.led_term[proc.id] = r.term
                self._check_leader_completeness(proc.id, node)
        log = r.log
        old = self.checked_commit.get(proc.id, 0)
        if log.commit_index > old:
            lo = max(old + 1, log.first_index())
            for e in log.slice(lo, log.commit_index + 1):
                known = self.committed.setdefault(e.index, (e.term, e.data))
                if known != (e.term, e.data):
                    self.fail(f"committed entry {e.index} replaced on {proc.id}")
                ct = self.commit_term.get(e.index)
                if ct is None or r.term < ct:
                    self.commit_term[e.index] = r.term
            self.checked_commit[proc.id] = log.commit_index
            self.max_committed = max(self.max_committed, log.commit_index)

    def _check_leader_completeness(self, nid: str, node: Node) -> None:
        """§5.4: a leader of term T holds every entry committed in a term below T."""
        log = node.raft.log
        term = node.raft.term
        first = log.first_index()
        for index, (eterm, _) in self.committed.items():
            if index < first or self.commit_term[index] >= term:
                continue
            if log.term_or_zero(index) != eterm:
                self.fail(f"leader completeness: {nid} leads term {term} without committed {index}")

    def check_logs_match(self) -> None:
        """Log matching, pairwise: if two logs agree at (i, t) they agree on all before."""
        logs: dict[str, dict[int, tuple[int, bytes]]] = {}
        for nid, proc in self.procs.items():
            if proc.node is None:
                continue
            log = proc.node.raft.log
            ents = log.slice(log.first_index(), log.last_index() + 1)
            logs[nid] = {e.index: (e.term, e.data) for e in ents}
        items = list(logs.items())
        for i, (a, la) in enumerate(items):
            for b, lb in items[i + 1 :]:
                common = sorted(set(la) & set(lb), reverse=True)
                agreed = False
                for idx in common:
                    if la[idx][0] == lb[idx][0]:
                        agreed = True
                    if agreed and la[idx] != lb[idx]:
                        self.fail(f"log matching: {a} and {b} differ at {idx} below an agreement")

    # --- chaos ---

    def leader(self) -> Node | None:
        best: Node | None = None
        for nid in self.up():
            node = self.procs[nid].node
            assert node is not None
            if node.raft.role is Role.LEADER and (best is None or node.raft.term > best.raft.term):
                best = node
        return best

    def step_time(self, chaos: bool, propose: bool = True) -> None:
        self.now += 1
        p, rng = self.p, self.rng
        if chaos:
            self._chaos()
        for nid in self.up():
            node = self.procs[nid].node
            assert node is not None
            node.tick()
            self.maybe_drive(nid)
        self.deliver_due()
        if propose and rng.random() < p.p_propose:
            lead = self.leader()
            if lead is not None:
                self.proposed += 1
                try:
                    if rng.random() < 0.3:
                        lead.propose_batch(
                            [b"b%d-%d" % (self.proposed, i) for i in range(rng.randint(2, 6))]
                        )
                    else:
                        lead.propose(b"p%d" % self.proposed)
                except ProposalDropped:
                    pass
                self.maybe_drive(lead.id)
        if self.now % 25 == 0:
            self.check_logs_match()

    def _chaos(self) -> None:
        p, rng = self.p, self.rng
        r = rng.random
        if r() < p.p_crash:
            ups = self.up()
            lead = self.leader()
            if lead is not None and r() < 0.5:
                self.crash(lead.id, clean=False)  # leaders' deaths make the hard histories
            elif ups:
                self.crash(rng.choice(ups), clean=False)
        if r() < p.p_clean_crash:
            ups = self.up()
            if ups:
                self.crash(rng.choice(ups), clean=True)
        for nid in self.ids:
            if self.procs[nid].node is None and r() < p.p_restart:
                self.start(nid)
        if r() < p.p_partition:
            self._partition()
        if self.cut and r() < p.p_heal:
            self.cut.clear()
            self.note("heal")
        if r() < p.p_conf_change:
            self._conf_change()
        if r() < p.p_transfer:
            lead = self.leader()
            if lead is not None:
                target = rng.choice(sorted(lead.conf_state.voters))
                try:
                    lead.transfer_leadership(target)
                    self.note(f"transfer {lead.id} -> {target}")
                except ProposalDropped:
                    pass
                self.maybe_drive(lead.id)
        if r() < p.p_read:
            ups = self.up()
            if ups:
                nid = rng.choice(ups)
                node = self.procs[nid].node
                assert node is not None
                self.read_seq += 1
                ctx = b"r%d" % self.read_seq
                try:
                    node.read_index(ctx)
                    self.reads[ctx] = self.max_committed
                except ProposalDropped:
                    pass
                self.maybe_drive(nid)

    def _partition(self) -> None:
        rng, ids = self.rng, self.ids
        kind = rng.choice(("link", "isolate", "split"))
        if kind == "link":
            a, b = rng.sample(ids, 2)
            self.cut.add(frozenset((a, b)))
        elif kind == "isolate":
            lead = self.leader()
            a = lead.id if lead is not None and rng.random() < 0.5 else rng.choice(ids)
            self.cut |= {frozenset((a, b)) for b in ids if b != a}
        else:
            side = set(rng.sample(ids, rng.randint(1, len(ids) - 1)))
            self.cut |= {frozenset((a, b)) for a in side for b in ids if b not in side}
        self.note(f"partition {kind} cut={sorted(tuple(sorted(c)) for c in self.cut)}")

    def _conf_change(self) -> None:
        lead = self.leader()
        if lead is None:
            return
        conf = lead.conf_state
        outsiders = [n for n in self.ids if n not in conf.voters and n not in conf.learners]
        options: list[ConfChange] = []
        for n in outsiders:
            options.append(ConfChange(ConfChangeOp.ADD_LEARNER, n))
            options.append(ConfChange(ConfChangeOp.ADD_VOTER, n))
        for n in sorted(conf.learners):
            options.append(ConfChange(ConfChangeOp.PROMOTE_LEARNER, n))
            options.append(ConfChange(ConfChangeOp.REMOVE_MEMBER, n))
        if len(conf.voters) > 2:
            for n in sorted(conf.voters):
                options.append(ConfChange(ConfChangeOp.REMOVE_MEMBER, n))
        if not options:
            return
        cc = self.rng.choice(options)
        try:
            index = lead.propose_conf_change(cc)
            self.note(f"conf change {cc.op.name} {cc.node_id} at {index} by {lead.id}")
        except (ProposalDropped, ConfChangeError):
            pass
        self.maybe_drive(lead.id)

    # --- phases ---

    def run_chaos(self, ticks: int) -> None:
        for _ in range(ticks):
            self.step_time(chaos=True)

    def settle(self, bound: int) -> int:
        """Heal everything; a leader must emerge and commit a fresh proposal, and every
        member must apply it, all within ``bound`` ticks. Returns ticks taken."""
        self.cut.clear()
        for nid in self.ids:
            if self.procs[nid].node is None:
                self.start(nid)
        self.p.p_drop = 0.0
        self.p.p_dup = 0.0
        self.note("settle")
        start = self.now
        marker = b"final-%d" % self.seed
        final_index = 0
        proposed_in: set[int] = set()
        while self.now - start < bound:
            self.step_time(chaos=False, propose=False)
            for nid in self.up():
                self.drive(nid)
            if not final_index:
                for index, (_, data) in self.committed.items():
                    if data == marker:
                        final_index = index
                lead = self.leader()
                if not final_index and lead is not None and lead.raft.term not in proposed_in:
                    try:
                        lead.propose(marker)
                        proposed_in.add(lead.raft.term)
                    except ProposalDropped:
                        pass
                continue
            lead = self.leader()
            if lead is None:
                continue
            members = lead.conf_state.voters | lead.conf_state.learners
            if all(self.procs[n].applied >= final_index for n in members):
                self.check_logs_match()
                return self.now - start
        stuck = {n: (p.node.status() if p.node else None) for n, p in self.procs.items()}
        lines = "\n".join(f"  {n}: {s}" for n, s in stuck.items())
        self.fail(f"liveness: no progress within {bound} ticks (final at {final_index})\n{lines}")
        return bound
