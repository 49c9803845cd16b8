"""The driver-facing API: Ready/advance bookkeeping, soft state, status."""

from __future__ import annotations

from tests.raft.harness import Net, make_node
from zonestore_node.raft import (
    ConfState,
    MemoryStorage,
    Message,
    MessageType,
    Node,
    ProgressState,
    Ready,
    Role,
    SoftState,
)

ABC = ["a", "b", "c"]


class Single:
    """A one-voter node whose driver persists every Ready before advancing."""

    def __init__(self) -> None:
        self.storage = MemoryStorage.bootstrapped(ConfState(frozenset("a")))
        self.node: Node = make_node("a", ["a"], storage=self.storage)

    def ready(self) -> Ready:
        rd = self.node.ready()
        self.storage.append(rd.entries)
        if rd.hard_state is not None:
            self.storage.set_hard_state(rd.hard_state)
        return rd


def test_ready_reports_soft_state_only_when_it_changes() -> None:
    s = Single()
    s.node.advance(s.ready())
    s.node.campaign()
    rd = s.ready()
    assert rd.soft_state == SoftState("a", Role.LEADER)
    s.node.advance(rd)
    s.node.propose(b"x")
    assert s.ready().soft_state is None


def test_ready_must_sync_when_entries_or_vote_change_but_not_for_commit_alone() -> None:
    node = make_node("b", ABC)
    node.advance(node.ready())
    node.step(Message(MessageType.REQUEST_VOTE, "b", "a", 2, index=3, log_term=1))
    rd = node.ready()
    assert rd.must_sync and rd.hard_state is not None and rd.hard_state.vote == "a"
    node.advance(rd)
    node.step(Message(MessageType.HEARTBEAT, "b", "a", 2, commit=3))
    rd = node.ready()
    assert not rd.must_sync


def test_committed_entries_are_handed_out_once() -> None:
    s = Single()
    node = s.node
    rd = s.ready()
    assert [e.index for e in rd.committed_entries] == [1]
    node.advance(rd)
    node.campaign()
    node.advance(s.ready())
    assert not node.has_ready()
    index = node.propose(b"x")
    rd = s.ready()
    assert [e.index for e in rd.entries] == [index]
    assert [e.data for e in rd.committed_entries] == [b"x"], "persist first, then apply"
    node.advance(rd)
    assert not node.has_ready()
    assert node.status().applied_index == index


def test_status_shows_peer_progress_on_the_leader_only() -> None:
    net = Net(ABC)
    net.elect("a")
    st = net["a"].status()
    assert st.role is Role.LEADER and st.lead == "a" and st.term == 2
    assert set(st.progress) == {"a", "b", "c"}
    assert st.progress["b"].match_index == st.last_index
    assert st.progress["b"].state is ProgressState.REPLICATE
    assert net["b"].status().progress == {}
    assert net["b"].status().lead == "a"
