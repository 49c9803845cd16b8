"""Learners and single-server membership changes (thesis §4.1-§4.2)."""

from __future__ import annotations

import pytest

from tests.raft.harness import Net, make_node, take_msgs
from zonestore_node.raft import (
    ConfChange,
    ConfChangeError,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    Role,
)
from zonestore_node.raft.confchange import ConfChangeOp, apply_change

ABC = ["a", "b", "c"]
MT = MessageType
Op = ConfChangeOp


def test_conf_change_round_trips_through_bytes() -> None:
    cc = ConfChange(Op.PROMOTE_LEARNER, "zs-b-1", b"10.0.0.7:7000")
    assert ConfChange.from_bytes(cc.to_bytes()) == cc


def test_undecodable_conf_change_raises() -> None:
    with pytest.raises(ConfChangeError):
        ConfChange.from_bytes(b"\x93\x01")


@pytest.mark.parametrize(
    ("change", "after"),
    [
        (ConfChange(Op.ADD_VOTER, "d"), ConfState(frozenset("abd"), frozenset("l"))),
        (ConfChange(Op.ADD_LEARNER, "d"), ConfState(frozenset("ab"), frozenset("ld"))),
        (ConfChange(Op.PROMOTE_LEARNER, "l"), ConfState(frozenset("abl"), frozenset())),
        (ConfChange(Op.REMOVE_MEMBER, "a"), ConfState(frozenset("b"), frozenset("l"))),
        (ConfChange(Op.REMOVE_MEMBER, "l"), ConfState(frozenset("ab"), frozenset())),
    ],
)
def test_apply_change_moves_exactly_one_server(change: ConfChange, after: ConfState) -> None:
    assert apply_change(ConfState(frozenset("ab"), frozenset("l")), change) == after


@pytest.mark.parametrize(
    "change",
    [
        ConfChange(Op.ADD_VOTER, "a"),
        ConfChange(Op.ADD_LEARNER, "l"),
        ConfChange(Op.PROMOTE_LEARNER, "a"),
        ConfChange(Op.REMOVE_MEMBER, "z"),
        ConfChange(Op.ADD_VOTER, ""),
    ],
)
def test_apply_change_rejects_changes_that_do_not_fit(change: ConfChange) -> None:
    with pytest.raises(ConfChangeError):
        apply_change(ConfState(frozenset("ab"), frozenset("l")), change)


def test_last_voter_cannot_be_removed() -> None:
    with pytest.raises(ConfChangeError):
        apply_change(ConfState(frozenset("a")), ConfChange(Op.REMOVE_MEMBER, "a"))


def test_learner_receives_the_log_but_never_campaigns() -> None:
    net = Net(ABC, learners=["l"])
    net.elect("a")
    index = net["a"].propose(b"x")
    net.stabilize()
    assert net.commit("l") == index
    net.isolate("l")
    net.tick("l", times=100)
    assert net.role("l") is Role.FOLLOWER
    assert not [m for m in net.delivered if m.from_ == "l" and m.type is MT.REQUEST_VOTE]


def test_learner_does_not_count_toward_the_commit_quorum() -> None:
    net = Net(["a", "b"], learners=["l"])
    net.elect("a")
    before = net.commit("a")
    net.cut |= {("a", "b"), ("b", "a")}
    index = net["a"].propose(b"x")
    net.stabilize()
    assert net.last_index("l") == index
    assert net.commit("a") == before


def test_learner_vote_does_not_count_toward_an_election() -> None:
    node = make_node("a", ["a", "b", "c"], ["l"], pre_vote=False)
    node.campaign()
    assert {m.to for m in take_msgs(node)} == {"b", "c"}, "learners are not asked"
    node.step(Message(MT.REQUEST_VOTE_RESPONSE, "a", "l", 2))
    assert node.raft.role is Role.CANDIDATE


def test_new_voter_takes_effect_when_its_entry_is_appended() -> None:
    net = Net(["a", "b"], outsiders=["c"])
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(Op.ADD_VOTER, "c"))
    assert "c" in net["a"].conf_state.voters, "in force before it commits (thesis §4.1)"
    net.stabilize()
    for nid in "abc":
        assert net[nid].conf_state == ConfState(frozenset("abc"))
    assert net.commit("c") == net.commit("a")


def test_new_member_learns_founding_membership_from_the_log() -> None:
    net = Net(ABC, outsiders=["l"])
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(Op.ADD_LEARNER, "l"))
    net.stabilize()
    assert net["l"].conf_state == ConfState(frozenset(ABC), frozenset("l"))


def test_leader_allows_one_uncommitted_conf_change_at_a_time() -> None:
    net = Net(ABC, learners=["l"])
    net.elect("a")
    net.isolate("a")
    net["a"].propose_conf_change(ConfChange(Op.PROMOTE_LEARNER, "l"))
    with pytest.raises(ProposalDropped):
        net["a"].propose_conf_change(ConfChange(Op.REMOVE_MEMBER, "c"))
    net.heal()
    net.tick("a")
    net["a"].propose_conf_change(ConfChange(Op.REMOVE_MEMBER, "c"))


def test_leader_refuses_conf_change_before_committing_an_entry_of_its_term() -> None:
    net = Net(ABC)
    net.filter = lambda m: m.type is not MT.APPEND_ENTRIES_RESPONSE
    net.elect("a")
    with pytest.raises(ProposalDropped):
        net["a"].propose_conf_change(ConfChange(Op.ADD_LEARNER, "l"))


def test_leader_rejects_an_invalid_conf_change() -> None:
    net = Net(ABC)
    net.elect("a")
    with pytest.raises(ConfChangeError):
        net["a"].propose_conf_change(ConfChange(Op.ADD_VOTER, "b"))


def test_follower_rejects_conf_change_proposal() -> None:
    net = Net(ABC)
    net.elect("a")
    with pytest.raises(ProposalDropped):
        net["b"].propose_conf_change(ConfChange(Op.ADD_LEARNER, "l"))


def test_promoted_learner_becomes_a_voter_everywhere() -> None:
    net = Net(ABC, learners=["l"])
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(Op.PROMOTE_LEARNER, "l"))
    net.stabilize()
    for nid in [*ABC, "l"]:
        assert net[nid].conf_state == ConfState(frozenset([*ABC, "l"]))
    assert net["l"].raft.promotable()


def test_removed_leader_steps_down_once_the_removal_commits() -> None:
    net = Net(ABC)
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(Op.REMOVE_MEMBER, "a"))
    net.stabilize()
    assert net.role("a") is Role.FOLLOWER and not net["a"].raft.promotable()
    leaders = [n for n in "bc" if net.role(n) is Role.LEADER]
    assert len(leaders) == 1, "the most caught-up voter was told to time out now"
    index = net[leaders[0]].propose(b"after")
    net.stabilize()
    assert net.commit("b") == net.commit("c") == index


def test_removed_follower_cannot_disrupt_the_group() -> None:
    net = Net(ABC)
    net.elect("a")
    net.isolate("c")
    net["a"].propose_conf_change(ConfChange(Op.REMOVE_MEMBER, "c"))
    net.stabilize()
    net.heal()
    for _ in range(60):
        net.tick()
    assert net.role("a") is Role.LEADER and net.term("a") == 2


def test_truncated_conf_change_reverts_the_configuration() -> None:
    node = make_node("b", ABC)
    add_d = ConfChange(Op.ADD_VOTER, "d").to_bytes()
    node.step(
        Message(
            MT.APPEND_ENTRIES,
            "b",
            "a",
            2,
            index=3,
            log_term=1,
            entries=(Entry(2, 4, EntryType.CONF_CHANGE, add_d),),
        )
    )
    assert "d" in node.conf_state.voters
    node.step(Message(MT.APPEND_ENTRIES, "b", "c", 3, index=3, log_term=1, entries=(Entry(3, 4),)))
    assert node.conf_state == ConfState(frozenset(ABC))


def test_restart_replays_conf_changes_from_the_log() -> None:
    net = Net(ABC, learners=["l"])
    net.elect("a")
    net["a"].propose_conf_change(ConfChange(Op.PROMOTE_LEARNER, "l"))
    net.stabilize()
    net.restart("b")
    assert net["b"].conf_state == ConfState(frozenset([*ABC, "l"]))
    assert net["b"].conf_state_at(3) == ConfState(frozenset(ABC))
    assert net["b"].conf_state_at(4) == ConfState(frozenset(ABC), frozenset("l"))
