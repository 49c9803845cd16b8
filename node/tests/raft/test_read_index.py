"""ReadIndex for linearizable reads (thesis §6.4)."""

from __future__ import annotations

import pytest

from tests.raft.harness import Net
from zonestore_node.raft import MessageType, ProposalDropped, ReadState

ABC = ["a", "b", "c"]
MT = MessageType


def test_leader_read_index_is_confirmed_by_a_heartbeat_quorum() -> None:
    net = Net(ABC)
    net.elect("a")
    net["a"].read_index(b"r1")
    net.drive("a")
    assert net.read_states["a"] == [], "not before a majority acknowledged a heartbeat"
    assert {m.to for m in net.queue if m.type is MT.HEARTBEAT and m.context == b"r1"} == {"b", "c"}
    net.stabilize()
    assert net.read_states["a"] == [ReadState(net.commit("a"), b"r1")]


def test_partitioned_leader_cannot_confirm_a_read() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("a")
    net["a"].read_index(b"r1")
    net.tick("a", times=5)
    assert net.read_states["a"] == []


def test_read_waits_until_the_leader_commits_an_entry_of_its_term() -> None:
    net = Net(ABC)
    net.filter = lambda m: m.type is not MT.APPEND_ENTRIES_RESPONSE
    net.elect("a")
    net["a"].read_index(b"r1")
    net.stabilize()
    assert net.read_states["a"] == []
    net.filter = None
    net.tick("a")
    net.stabilize()
    (rs,) = net.read_states["a"]
    assert rs.index == net.last_index("a"), "at least the leader's no-op"


def test_follower_forwards_read_index_to_the_leader() -> None:
    net = Net(ABC)
    net.elect("a")
    index = net["a"].propose(b"w")
    net.stabilize()
    net["b"].read_index(b"rb")
    net.stabilize()
    assert net.read_states["b"] == [ReadState(index, b"rb")]
    assert net.read_states["a"] == []


def test_single_voter_serves_a_read_at_once() -> None:
    net = Net(["a"])
    net.elect("a")
    net["a"].read_index(b"r")
    net.stabilize()
    assert net.read_states["a"] == [ReadState(net.commit("a"), b"r")]


def test_one_quorum_ack_confirms_all_earlier_reads() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("a")
    net["a"].read_index(b"r1")
    net["a"].read_index(b"r2")
    net.stabilize()
    net.heal()
    net.tick("a")
    assert [rs.request_ctx for rs in net.read_states["a"]] == [b"r1", b"r2"]


def test_read_index_without_a_known_leader_is_refused() -> None:
    net = Net(ABC)
    with pytest.raises(ProposalDropped):
        net["b"].read_index(b"r")


def test_rounds_taken_between_two_readies_send_one_heartbeat_per_peer() -> None:
    """Reads from several replicas at once: the last heartbeat carries the newest round,
    whose quorum confirms the earlier ones too; all three rounds are answered."""
    net = Net(ABC)
    net.elect("a")
    index = net["a"].propose(b"w")
    net.stabilize()
    net["b"].read_index(b"rb")
    net["c"].read_index(b"rc")
    net.drive("b")
    net.drive("c")
    requests = [m for m in net.queue if m.type is MT.READ_INDEX]
    assert len(requests) == 2
    net.queue.clear()
    for m in requests:  # both arrive before the leader's next Ready
        net["a"].step(m)
    net["a"].read_index(b"ra")
    net.drive("a")
    beats = [m for m in net.queue if m.type is MT.HEARTBEAT]
    assert sorted(m.to for m in beats) == ["b", "c"]
    assert {m.context for m in beats} == {b"ra"}  # the newest round's
    net.stabilize()
    assert net.read_states["a"] == [ReadState(index, b"ra")]
    assert net.read_states["b"] == [ReadState(index, b"rb")]
    assert net.read_states["c"] == [ReadState(index, b"rc")]
