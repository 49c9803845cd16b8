"""A small synchronous network of raft nodes for the paper-section unit tests.

`Net` drives each node the way the replica layer must (persist, send, apply, advance)
and delivers messages in FIFO order until quiet, with optional dropped links and a
message filter. Tests that need a single node's raw output use `raft_of` /
`take_msgs` instead.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable

from zonestore_node.raft import (
    Config,
    ConfState,
    Entry,
    MemoryStorage,
    Message,
    MessageType,
    Node,
    ReadState,
    Role,
)
from zonestore_node.raft.core import Raft


def make_node(
    nid: str,
    voters: Iterable[str],
    learners: Iterable[str] = (),
    *,
    storage: MemoryStorage | None = None,
    seed: int = 0,
    **cfg: object,
) -> Node:
    if storage is None:
        storage = MemoryStorage.bootstrapped(ConfState(frozenset(voters), frozenset(learners)))
    config = Config(id=nid, **cfg)  # type: ignore[arg-type]
    return Node(config, storage, random.Random(seed))


def take_msgs(node: Node) -> list[Message]:
    msgs, node.raft.msgs = node.raft.msgs, []
    return msgs


def raft_of(node: Node) -> Raft:
    return node.raft


class Net:
    def __init__(
        self,
        ids: Iterable[str],
        learners: Iterable[str] = (),
        outsiders: Iterable[str] = (),
        **cfg: object,
    ) -> None:
        ids = list(ids)
        learners = list(learners)
        conf = ConfState(frozenset(ids), frozenset(learners))
        self.storages: dict[str, MemoryStorage] = {}
        self.nodes: dict[str, Node] = {}
        self.applied: dict[str, list[Entry]] = {}
        self.read_states: dict[str, list[ReadState]] = {}
        self.cfg = cfg
        for i, nid in enumerate([*ids, *learners, *outsiders]):
            st = MemoryStorage() if nid in outsiders else MemoryStorage.bootstrapped(conf)
            self.storages[nid] = st
            self.nodes[nid] = Node(Config(id=nid, **cfg), st, random.Random(i))  # type: ignore[arg-type]
            self.applied[nid] = []
            self.read_states[nid] = []
        self.cut: set[tuple[str, str]] = set()
        self.filter: Callable[[Message], bool] | None = None  # return False to drop
        self.queue: deque[Message] = deque()
        self.delivered: list[Message] = []

    def __getitem__(self, nid: str) -> Node:
        return self.nodes[nid]

    def isolate(self, nid: str) -> None:
        for other in self.nodes:
            if other != nid:
                self.cut |= {(nid, other), (other, nid)}

    def heal(self) -> None:
        self.cut.clear()
        self.filter = None

    def drive(self, nid: str) -> None:
        node = self.nodes[nid]
        st = self.storages[nid]
        while node.has_ready():
            rd = node.ready()
            if rd.snapshot is not None:
                st.apply_snapshot(rd.snapshot)
            st.append(rd.entries)
            if rd.hard_state is not None:
                st.set_hard_state(rd.hard_state)
            self.queue.extend(rd.messages)
            self.applied[nid].extend(rd.committed_entries)
            self.read_states[nid].extend(rd.read_states)
            node.advance(rd)

    def stabilize(self, limit: int = 10_000) -> None:
        for nid in self.nodes:
            self.drive(nid)
        n = 0
        while self.queue:
            n += 1
            assert n < limit, "network did not quiesce"
            m = self.queue.popleft()
            if (m.from_, m.to) in self.cut or m.to not in self.nodes:
                continue
            if self.filter is not None and not self.filter(m):
                continue
            self.delivered.append(m)
            self.nodes[m.to].step(m)
            self.drive(m.to)

    def tick(self, nid: str | None = None, times: int = 1) -> None:
        for _ in range(times):
            for n in [nid] if nid else list(self.nodes):
                self.nodes[n].tick()
            self.stabilize()

    def elect(self, nid: str) -> None:
        self.nodes[nid].campaign()
        self.stabilize()
        assert self.role(nid) is Role.LEADER

    def role(self, nid: str) -> Role:
        return self.nodes[nid].raft.role

    def term(self, nid: str) -> int:
        return self.nodes[nid].raft.term

    def commit(self, nid: str) -> int:
        return self.nodes[nid].raft.log.commit_index

    def last_index(self, nid: str) -> int:
        return self.nodes[nid].raft.log.last_index()

    def sent(self, mtype: MessageType) -> list[Message]:
        return [m for m in self.delivered if m.type is mtype]

    def restart(self, nid: str) -> None:
        applied = self.applied[nid][-1].index if self.applied[nid] else 0
        applied = max(applied, self.storages[nid].snapshot().metadata.index)
        cfg = Config(id=nid, applied=applied, **self.cfg)  # type: ignore[arg-type]
        self.nodes[nid] = Node(cfg, self.storages[nid], random.Random(99))


def storage_with_log(
    voters: Iterable[str], terms: Iterable[int], term: int | None = None
) -> MemoryStorage:
    """Bootstrapped storage (indexes 1..n at term 1) followed by entries of ``terms``."""
    from zonestore_node.raft import HardState

    voters = list(voters)
    st = MemoryStorage.bootstrapped(ConfState(frozenset(voters)))
    start = st.last_index() + 1
    ents = [Entry(t, start + i, data=b"e%d" % (start + i)) for i, t in enumerate(terms)]
    st.append(ents)
    top = max([1, *(e.term for e in ents)])
    st.set_hard_state(
        HardState(term=term if term is not None else top, vote="", commit=len(voters))
    )
    return st


def log_terms(node: Node) -> list[int]:
    log = node.raft.log
    return [e.term for e in log.slice(log.first_index(), log.last_index() + 1)]
