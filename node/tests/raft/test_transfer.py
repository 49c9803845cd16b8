"""Leadership transfer (thesis §3.10)."""

from __future__ import annotations

import pytest

from tests.raft.harness import Net
from zonestore_node.raft import MessageType, ProposalDropped, Role

ABC = ["a", "b", "c"]
MT = MessageType


def test_leader_transfers_leadership_to_an_up_to_date_follower() -> None:
    net = Net(ABC)
    net.elect("a")
    net["a"].transfer_leadership("b")
    net.stabilize()
    assert net.role("b") is Role.LEADER and net.term("b") == 3
    assert net.role("a") is Role.FOLLOWER and net["a"].raft.lead == "b"


def test_transfer_target_wins_although_followers_hold_a_leader_lease() -> None:
    net = Net(ABC)
    net.elect("a")
    net["a"].transfer_leadership("c")
    net.stabilize()
    grants = [m for m in net.sent(MT.REQUEST_VOTE_RESPONSE) if m.to == "c" and not m.reject]
    assert grants and not any(m.pre_vote for m in grants)
    assert net.role("c") is Role.LEADER


def test_leader_brings_the_target_up_to_date_before_timeout_now() -> None:
    net = Net(ABC)
    net.elect("a")
    net.cut |= {("a", "c"), ("c", "a")}
    for i in range(5):
        net["a"].propose(b"x%d" % i)
    net.stabilize()
    behind = net.last_index("c")
    net.heal()
    net["a"].transfer_leadership("c")
    net.stabilize()
    timeout_now = [i for i, m in enumerate(net.delivered) if m.type is MT.TIMEOUT_NOW]
    assert timeout_now
    catch_up = [
        i
        for i, m in enumerate(net.delivered)
        if m.type is MT.APPEND_ENTRIES and m.to == "c" and m.entries
    ]
    assert catch_up and catch_up[-1] < timeout_now[0]
    assert net.role("c") is Role.LEADER and net.last_index("c") > behind + 5


def test_leader_refuses_proposals_while_transferring() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("c")
    net["a"].transfer_leadership("c")
    with pytest.raises(ProposalDropped):
        net["a"].propose(b"x")


def test_transfer_aborts_after_an_election_timeout() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("c")
    net["a"].transfer_leadership("c")
    net.tick("a", times=10)
    assert net.role("a") is Role.LEADER and net["a"].raft.lead_transferee == ""
    net["a"].propose(b"x")


def test_transfer_to_a_learner_or_stranger_is_refused() -> None:
    net = Net(ABC, learners=["l"])
    net.elect("a")
    for target in ("l", "zz"):
        with pytest.raises(ProposalDropped):
            net["a"].transfer_leadership(target)


def test_follower_cannot_transfer_leadership() -> None:
    net = Net(ABC)
    net.elect("a")
    with pytest.raises(ProposalDropped):
        net["b"].transfer_leadership("c")
