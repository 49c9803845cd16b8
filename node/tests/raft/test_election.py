"""Leader election: §5.2, §5.4.1, pre-vote (thesis §9.6), check-quorum and the leader lease."""

from __future__ import annotations

import pytest

from tests.raft.harness import Net, make_node, storage_with_log, take_msgs
from zonestore_node.raft import Message, MessageType, Role
from zonestore_node.raft.core import Raft

ABC = ["a", "b", "c"]
MT = MessageType


def role_of(raft: Raft) -> Role:
    """The role read through a call: mypy would carry an earlier `assert raft.role is X`
    past the tick() or step() that changes it and call the next check unreachable."""
    return raft.role


def vote_request(
    frm: str, to: str, term: int, index: int, log_term: int, pre: bool = False
) -> Message:
    return Message(MT.REQUEST_VOTE, to, frm, term, index=index, log_term=log_term, pre_vote=pre)


def test_election_timeout_is_randomized_between_one_and_two_timeouts() -> None:
    seen = set()
    for seed in range(40):
        r = make_node("a", ABC, seed=seed).raft
        assert 10 <= r.randomized_election_timeout < 20
        seen.add(r.randomized_election_timeout)
    assert len(seen) > 3


def test_follower_starts_pre_vote_after_its_election_timeout() -> None:
    node = make_node("a", ABC)
    r = node.raft
    for _ in range(r.randomized_election_timeout - 1):
        node.tick()
    assert r.role is Role.FOLLOWER
    assert not take_msgs(node)
    node.tick()
    assert role_of(r) is Role.PRE_CANDIDATE
    assert r.term == 1, "a pre-candidate does not increment its term"
    msgs = take_msgs(node)
    assert {m.to for m in msgs} == {"b", "c"}
    assert all(m.type is MT.REQUEST_VOTE and m.pre_vote and m.term == 2 for m in msgs)


def test_candidate_with_majority_of_votes_becomes_leader() -> None:
    net = Net(ABC)
    net.elect("a")
    assert net.term("a") == 2
    assert net.role("b") is net.role("c") is Role.FOLLOWER
    assert net["b"].raft.lead == net["c"].raft.lead == "a"


def test_pre_vote_round_precedes_the_real_election() -> None:
    net = Net(ABC)
    net.elect("a")
    votes = net.sent(MT.REQUEST_VOTE)
    assert [m.pre_vote for m in votes] == [True, True, False, False]


def test_single_voter_becomes_leader_on_campaign() -> None:
    net = Net(["a"])
    net.elect("a")
    assert net.commit("a") == net.last_index("a"), "its no-op commits alone"


def test_node_grants_at_most_one_vote_per_term() -> None:
    node = make_node("a", ABC)
    node.step(vote_request("b", "a", 2, 3, 1))
    node.step(vote_request("c", "a", 2, 3, 1))
    granted = [m.from_ for m in take_msgs(node) if not m.reject]
    assert granted == ["a"]  # the response to b
    assert node.raft.vote == "b"


def test_node_repeats_its_grant_to_the_same_candidate() -> None:
    node = make_node("a", ABC)
    node.step(vote_request("b", "a", 2, 3, 1))
    node.step(vote_request("b", "a", 2, 3, 1))
    assert [m.reject for m in take_msgs(node)] == [False, False]


@pytest.mark.parametrize(
    ("cand_index", "cand_term", "granted"),
    [
        (5, 2, True),  # same last term, same length
        (6, 2, True),  # same last term, longer
        (4, 2, False),  # same last term, shorter
        (2, 3, True),  # higher last term wins however short
        (9, 1, False),  # lower last term loses however long
    ],
)
def test_vote_requires_candidate_log_at_least_as_up_to_date(
    cand_index: int, cand_term: int, granted: bool
) -> None:
    # §5.4.1: our log is [1, 1, 1, 2, 2] (last index 5, last term 2).
    node = make_node("a", ABC, storage=storage_with_log(ABC, [2, 2]))
    node.step(vote_request("b", "a", 3, cand_index, cand_term))
    (resp,) = take_msgs(node)
    assert resp.type is MT.REQUEST_VOTE_RESPONSE
    assert resp.reject is (not granted)


def test_vote_survives_stepping_down_within_the_same_term() -> None:
    # The classic bug: a role change must never clear the vote of the current term.
    node = make_node("a", ABC, pre_vote=False)
    node.campaign()
    assert node.raft.role is Role.CANDIDATE and node.raft.vote == "a"
    node.step(Message(MT.APPEND_ENTRIES, "a", "b", 2, index=3, log_term=1))
    assert role_of(node.raft) is Role.FOLLOWER and node.raft.term == 2
    assert node.raft.vote == "a"
    take_msgs(node)
    node.step(vote_request("c", "a", 2, 9, 1))
    (resp,) = take_msgs(node)
    assert resp.reject


def test_node_answering_pre_vote_keeps_its_term_and_vote() -> None:
    node = make_node("a", ABC)
    node.step(vote_request("b", "a", 5, 3, 1, pre=True))
    (resp,) = take_msgs(node)
    assert not resp.reject and resp.pre_vote and resp.term == 5
    assert node.raft.term == 1 and node.raft.vote == ""


def test_node_rejects_pre_vote_of_lower_term_with_its_own_term() -> None:
    node = make_node("a", ABC)
    node.step(Message(MT.HEARTBEAT, "a", "b", 4))
    take_msgs(node)
    node.raft.lead = ""  # no lease in the way
    node.step(vote_request("c", "a", 3, 9, 9, pre=True))
    (resp,) = take_msgs(node)
    assert resp.reject and resp.term == 4


def test_follower_ignores_vote_requests_while_its_leader_is_alive() -> None:
    net = Net(ABC)
    net.elect("a")
    b = net["b"]
    b.step(vote_request("c", "b", 9, 100, 9))
    assert b.raft.term == 2 and b.raft.vote == "a"
    assert not take_msgs(b)


def test_partitioned_node_does_not_disrupt_the_leader_when_it_returns() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("c")
    for _ in range(50):
        net.tick()
    assert net.term("c") == 2, "pre-vote kept the isolated node's term"
    net.heal()
    for _ in range(30):
        net.tick()
    assert net.role("a") is Role.LEADER and net.term("a") == 2


def test_leader_steps_down_when_it_has_not_heard_from_a_majority_for_an_election_timeout() -> None:
    # The first check after isolation still sees the acks from before it; the next,
    # one full election timeout without any ack, steps down.
    net = Net(ABC)
    net.elect("a")
    net.isolate("a")
    net.tick("a", times=19)
    assert net.role("a") is Role.LEADER
    net.tick("a")
    assert net.role("a") is Role.FOLLOWER


def test_leader_without_check_quorum_stays_leader_when_isolated() -> None:
    net = Net(ABC, check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net.tick("a", times=50)
    assert net.role("a") is Role.LEADER


def test_stale_leader_steps_down_when_a_follower_answers_with_a_higher_term() -> None:
    net = Net(ABC, check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net.elect("b")
    assert net.term("b") == 3
    net.heal()
    net.tick("a")  # a heartbeat of term 2 reaches b and c
    assert net.role("a") is Role.FOLLOWER and net.term("a") == 3


def test_candidate_that_loses_the_majority_returns_to_follower() -> None:
    node = make_node("a", ABC, pre_vote=False)
    node.campaign()
    for peer in ("b", "c"):
        node.step(Message(MT.REQUEST_VOTE_RESPONSE, "a", peer, 2, reject=True))
    assert node.raft.role is Role.FOLLOWER and node.raft.term == 2
