"""Log compaction, InstallSnapshot, restart from storage, and the storage contract."""

from __future__ import annotations

import pytest

from tests.raft.harness import Net, make_node, take_msgs
from zonestore_node.raft import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    ErrCompacted,
    ErrSnapshotOutOfDate,
    ErrUnavailable,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    Role,
    Snapshot,
    SnapshotMetadata,
)
from zonestore_node.raft.progress import Progress

ABC = ["a", "b", "c"]
MT = MessageType


def state_of(pr: Progress) -> ProgressState:
    """The state read through a call: mypy would carry an earlier `assert pr.state is X`
    past the call that changes it and call the next check unreachable."""
    return pr.state


def storage_1_to_9() -> MemoryStorage:
    st = MemoryStorage()
    st.append([Entry(1 + i // 4, i, data=bytes(10)) for i in range(1, 10)])
    return st


def test_storage_entries_are_a_half_open_range() -> None:
    st = storage_1_to_9()
    assert [e.index for e in st.entries(3, 6)] == [3, 4, 5]
    assert st.entries(4, 4) == []
    assert (st.first_index(), st.last_index()) == (1, 9)


def test_storage_entries_respect_max_bytes_but_return_at_least_one() -> None:
    st = storage_1_to_9()
    assert [e.index for e in st.entries(1, 10, max_bytes=60)] == [1, 2]  # 26 bytes each
    assert [e.index for e in st.entries(1, 10, max_bytes=1)] == [1]


def test_storage_raises_compacted_below_first_index_and_unavailable_past_last() -> None:
    st = storage_1_to_9()
    st.create_snapshot(5, ConfState(frozenset("a")), b"s")
    st.compact(5)
    assert (st.first_index(), st.last_index()) == (6, 9)
    assert st.term(5) == 2, "the snapshot's term stays answerable"
    with pytest.raises(ErrCompacted):
        st.entries(5, 7)
    with pytest.raises(ErrCompacted):
        st.term(4)
    with pytest.raises(ErrUnavailable):
        st.entries(6, 11)
    with pytest.raises(ErrUnavailable):
        st.term(10)
    with pytest.raises(ErrCompacted):
        st.compact(5)


def test_storage_append_truncates_a_conflicting_suffix() -> None:
    st = storage_1_to_9()
    st.append([Entry(7, 4), Entry(7, 5)])
    assert st.last_index() == 5 and st.term(4) == 7


def test_storage_refuses_an_older_snapshot() -> None:
    st = storage_1_to_9()
    st.create_snapshot(5, ConfState(), b"")
    with pytest.raises(ErrSnapshotOutOfDate):
        st.apply_snapshot(Snapshot(SnapshotMetadata(4, 1, ConfState())))


def compacted_net() -> tuple[Net, int]:
    """Leader a compacted its log while c was cut off."""
    net = Net(ABC)
    net.elect("a")
    net.isolate("c")
    for i in range(10):
        net["a"].propose(b"x%d" % i)
    net.stabilize()
    applied = net.applied["a"][-1].index
    st = net.storages["a"]
    st.create_snapshot(applied, net["a"].conf_state_at(applied), b"image@%d" % applied)
    st.compact(applied)
    return net, applied


def test_leader_sends_a_snapshot_to_a_follower_behind_its_compacted_log() -> None:
    net, snap_index = compacted_net()
    net.heal()
    net.tick("a")
    net.stabilize()
    (msg,) = net.sent(MT.INSTALL_SNAPSHOT)
    assert msg.to == "c" and msg.snapshot is not None
    assert (
        msg.snapshot.metadata.index == snap_index and msg.snapshot.data == b"image@%d" % snap_index
    )
    assert net.storages["c"].snapshot().metadata.index == snap_index
    assert net.commit("c") == net.commit("a")
    assert net["a"].raft.prs["c"].state is ProgressState.REPLICATE


def test_follower_restores_snapshot_membership_and_replies_with_its_last_index() -> None:
    node = make_node("c", ABC)
    conf = ConfState(frozenset("abcd"))
    snap = Snapshot(SnapshotMetadata(20, 2, conf), b"img")
    node.step(Message(MT.INSTALL_SNAPSHOT, "c", "a", 2, snapshot=snap))
    (resp,) = take_msgs(node)
    assert resp.type is MT.INSTALL_SNAPSHOT_RESPONSE and resp.index == 20
    assert node.conf_state == conf
    rd = node.ready()
    assert rd.snapshot == snap and rd.committed_entries == []
    node.advance(rd)
    assert node.raft.log.applied_index == 20


def test_follower_ignores_a_snapshot_its_commit_already_covers() -> None:
    node = make_node("c", ABC)
    snap = Snapshot(SnapshotMetadata(2, 1, ConfState(frozenset(ABC))), b"img")
    node.step(Message(MT.INSTALL_SNAPSHOT, "c", "a", 2, snapshot=snap))
    (resp,) = take_msgs(node)
    assert resp.index == 3  # its commit index
    assert node.raft.log.unstable.snapshot is None


def test_failed_snapshot_transfer_returns_the_follower_to_probing() -> None:
    net, _ = compacted_net()
    net.heal()
    net.filter = lambda m: m.type is not MT.INSTALL_SNAPSHOT
    net.tick("a")
    pr = net["a"].raft.prs["c"]
    assert pr.state is ProgressState.SNAPSHOT
    net["a"].report_snapshot("c", failure=True)
    assert state_of(pr) is ProgressState.PROBE
    net.filter = None
    net.tick("a", times=2)
    assert net.commit("c") == net.commit("a")


def test_node_restarts_from_what_was_persisted() -> None:
    net = Net(ABC)
    net.elect("a")
    net["a"].propose(b"x")
    net["a"].propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, "l"))
    net.stabilize()
    before = net["b"].raft.hard_state()
    net.restart("b")
    r = net["b"].raft
    assert r.hard_state() == before
    assert r.role is Role.FOLLOWER and r.log.last_index() == net.last_index("a")
    assert net["b"].conf_state == ConfState(frozenset(ABC), frozenset("l"))


def test_restart_after_compaction_uses_the_snapshot_membership() -> None:
    net, snap_index = compacted_net()
    net.restart("a")
    assert net["a"].conf_state == ConfState(frozenset(ABC))
    assert net["a"].raft.log.first_index() == snap_index + 1
    net.heal()
    for _ in range(40):
        net.tick()
    assert any(net.role(n) is Role.LEADER for n in ABC)
