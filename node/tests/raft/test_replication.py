"""Log replication: §5.3 (AppendEntries receiver steps), §5.4.2, backtracking, flow control."""

from __future__ import annotations

from tests.raft.harness import Net, log_terms, make_node, storage_with_log, take_msgs
from zonestore_node.raft import Entry, HardState, Message, MessageType, ProgressState, Role

ABC = ["a", "b", "c"]
MT = MessageType


def append(
    frm: str, to: str, term: int, prev: int, prev_term: int, ents: list[Entry], commit: int = 0
) -> Message:
    return Message(
        MT.APPEND_ENTRIES,
        to,
        frm,
        term,
        index=prev,
        log_term=prev_term,
        entries=tuple(ents),
        commit=commit,
    )


def follower(terms: list[int], term: int = 3) -> object:
    return make_node("b", ABC, storage=storage_with_log(ABC, terms, term=term))


def test_follower_rejects_append_with_stale_term() -> None:
    node = make_node("b", ABC, storage=storage_with_log(ABC, [2], term=3))
    node.step(append("a", "b", 2, 4, 2, [Entry(2, 5)]))
    (resp,) = take_msgs(node)
    assert resp.type is MT.APPEND_ENTRIES_RESPONSE and resp.term == 3
    assert log_terms(node) == [1, 1, 1, 2], "nothing appended from a stale leader"


def test_follower_rejects_append_whose_previous_entry_it_lacks() -> None:
    # §5.3 receiver step 2; the hint points at our last entry.
    node = make_node("b", ABC, storage=storage_with_log(ABC, [2], term=3))
    node.step(append("a", "b", 3, 7, 3, [Entry(3, 8)]))
    (resp,) = take_msgs(node)
    assert resp.reject and resp.index == 7
    assert (resp.reject_hint, resp.log_term) == (4, 2)


def test_follower_rejection_hint_skips_the_whole_conflicting_term() -> None:
    # Our log [1,1,1,3,3,3]; the leader's prev is (6, term 2): nothing of term 3 can match.
    node = make_node("b", ABC, storage=storage_with_log(ABC, [3, 3, 3], term=3))
    node.step(append("a", "b", 4, 6, 2, []))
    (resp,) = take_msgs(node)
    assert resp.reject and (resp.reject_hint, resp.log_term) == (3, 1)


def test_follower_deletes_conflicting_entries_and_appends_new_ones() -> None:
    # §5.3 receiver steps 3 and 4.
    node = make_node("b", ABC, storage=storage_with_log(ABC, [2, 2, 2], term=3))
    node.step(append("a", "b", 3, 4, 2, [Entry(3, 5, data=b"x")]))
    (resp,) = take_msgs(node)
    assert not resp.reject and resp.index == 5
    assert log_terms(node) == [1, 1, 1, 2, 3]


def test_follower_keeps_its_log_when_an_old_append_arrives_late() -> None:
    node = make_node("b", ABC, storage=storage_with_log(ABC, [2, 2, 2], term=2))
    node.step(append("a", "b", 2, 3, 1, [Entry(2, 4, data=b"e4")]))
    (resp,) = take_msgs(node)
    assert resp.index == 4
    assert log_terms(node) == [1, 1, 1, 2, 2, 2], "a matching prefix never truncates"


def test_follower_commits_up_to_the_last_new_entry_only() -> None:
    # §5.3 receiver step 5: commitIndex = min(leaderCommit, index of last new entry).
    node = make_node("b", ABC, storage=storage_with_log(ABC, [], term=2))
    node.step(append("a", "b", 2, 3, 1, [Entry(2, 4)], commit=10))
    assert node.raft.log.commit_index == 4


def test_leader_commits_an_entry_once_a_majority_stores_it() -> None:
    net = Net(ABC)
    net.elect("a")
    net.cut |= {("a", "c"), ("c", "a")}
    index = net["a"].propose(b"x")
    net.stabilize()
    assert net.commit("a") == net.commit("b") == index
    assert net.last_index("c") < index
    assert [e.data for e in net.applied["a"]][-1] == b"x"


def test_leader_without_a_majority_commits_nothing() -> None:
    net = Net(ABC)
    net.elect("a")
    before = net.commit("a")
    net.isolate("a")
    net["a"].propose(b"x")
    net.stabilize()
    assert net.commit("a") == before


def test_leader_never_commits_an_entry_of_a_previous_term_by_counting_replicas() -> None:
    # §5.4.2 / Figure 8: a's entry 4 (term 2) reaches a majority while a leads term 3,
    # but only the replication of a term-3 entry may commit it.
    net = Net(ABC, pre_vote=False, max_size_per_msg=1)
    net.storages["a"].append([Entry(2, 4, data=b"old")])
    for nid in ABC:
        net.storages[nid].set_hard_state(HardState(2, "", 3))
        net.restart(nid)
    first_probe: set[str] = set()

    def hold_entry_5(m: Message) -> bool:
        if m.type is MT.APPEND_ENTRIES and m.entries and m.entries[-1].index >= 5:
            if m.to in first_probe:
                return False
            first_probe.add(m.to)  # the first probe is rejected anyway: 4 is missing
        return True

    net.filter = hold_entry_5
    net.elect("a")
    assert net.term("a") == 3
    assert net["a"].raft.prs["b"].match_index == 4 and net["a"].raft.prs["c"].match_index == 4
    assert net.commit("a") == 3, "entry 4 is on every node but is not of the current term"
    net.filter = None
    net.tick("a")
    assert net.commit("a") == 5
    assert net.commit("b") == 5


def test_leader_backtracks_over_a_conflicting_term_in_few_round_trips() -> None:
    net = Net(ABC, pre_vote=False)
    net.storages["a"].append([Entry(3, 4), Entry(3, 5)])
    net.storages["b"].append([Entry(2, i) for i in range(4, 30)])
    for nid in ABC:
        net.storages[nid].set_hard_state(HardState(3, "", 3))
        net.restart(nid)
    net.elect("a")
    rejects = [m for m in net.sent(MT.APPEND_ENTRIES_RESPONSE) if m.from_ == "b" and m.reject]
    assert 1 <= len(rejects) <= 2
    assert log_terms(net["b"]) == log_terms(net["a"]) == [1, 1, 1, 3, 3, 4]


def test_leader_pipelines_appends_up_to_max_inflight_messages() -> None:
    net = Net(ABC, max_inflight_msgs=2)
    net.elect("a")
    assert net["a"].raft.prs["b"].state is ProgressState.REPLICATE
    sent_to_b: list[Message] = []

    def hold_b(m: Message) -> bool:
        if m.to == "b":
            sent_to_b.append(m)
            return False
        return True

    net.filter = hold_b
    for i in range(5):
        net["a"].propose(b"p%d" % i)
        net.stabilize()
    assert len([m for m in sent_to_b if m.type is MT.APPEND_ENTRIES and m.entries]) == 2
    assert net["a"].raft.prs["b"].is_paused()
    net.filter = None
    net.tick("a")  # a heartbeat response frees a slot; b catches up
    net.stabilize()
    assert net.last_index("b") == net.last_index("a")


def test_leader_splits_entries_by_max_size_per_message() -> None:
    net = Net(ABC, max_size_per_msg=200)
    net.elect("a")
    net["a"].propose_batch([bytes(40)] * 10)  # 56 bytes each as counted
    net.stabilize()
    appends = [m for m in net.sent(MT.APPEND_ENTRIES) if m.to == "b" and m.entries]
    assert max(len(m.entries) for m in appends) == 3
    assert net.last_index("b") == net.last_index("a")


def test_probing_leader_sends_one_append_at_a_time() -> None:
    net = Net(ABC)
    net.elect("a")
    pr = net["a"].raft.prs["c"]
    pr.become_probe()
    net.filter = lambda m: m.to != "c"
    net["a"].propose(b"x")
    net["a"].propose(b"y")
    net.stabilize()
    assert pr.state is ProgressState.PROBE and pr.paused
    assert len([m for m in take_msgs(net["a"]) if m.to == "c"]) == 0


def test_batch_proposal_replicates_in_one_append() -> None:
    net = Net(ABC)
    net.elect("a")
    n_before = len(net.sent(MT.APPEND_ENTRIES))
    last = net["a"].propose_batch([b"1", b"2", b"3"])
    net.stabilize()
    new = [m for m in net.sent(MT.APPEND_ENTRIES)[n_before:] if m.entries]
    assert len(new) == 2 and all(len(m.entries) == 3 for m in new)
    assert net.commit("b") == last


def test_new_leader_appends_a_no_op_entry_of_its_term() -> None:
    net = Net(ABC)
    net.elect("a")
    last = net["a"].raft.log.slice(net.last_index("a"), net.last_index("a") + 1)[0]
    assert last.term == 2 and last.data == b""
    assert net.role("b") is Role.FOLLOWER


def test_without_eager_broadcast_followers_learn_the_commit_from_the_next_heartbeat() -> None:
    net = Net(["a", "b", "c"], eager_commit_broadcast=False)
    net.elect("a")
    net.stabilize()
    sent_before = len(net.delivered)
    index = net["a"].propose(b"x")
    net.stabilize()
    assert net.commit("a") == index
    assert net.commit("b") < index  # nobody told b yet
    appends = [m for m in net.delivered[sent_before:] if m.type is MessageType.APPEND_ENTRIES]
    assert len(appends) == 2  # one per follower, none just for the commit index
    net.tick("a", times=net["a"].raft.config.heartbeat_tick)
    net.stabilize()
    assert net.commit("b") == net.commit("c") == index
