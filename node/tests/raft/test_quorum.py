"""Majority math against naive definitions (hypothesis)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from zonestore_node.raft.quorum import VoteResult, committed_index, quorum_active, vote_result

voter_ids = st.lists(st.sampled_from("abcdefghi"), min_size=1, max_size=9, unique=True)


def naive_committed(voters: list[str], match: dict[str, int]) -> int:
    """The largest index i such that more than half of the voters have match >= i."""
    best = 0
    for i in range(0, max(match.values(), default=0) + 1):
        if sum(1 for v in voters if match.get(v, 0) >= i) * 2 > len(voters):
            best = i
    return best


@given(voter_ids, st.dictionaries(st.sampled_from("abcdefghij"), st.integers(0, 30)))
def test_committed_index_matches_the_naive_definition(
    voters: list[str], match: dict[str, int]
) -> None:
    assert committed_index(voters, match) == naive_committed(voters, match)


@given(voter_ids, st.dictionaries(st.sampled_from("abcdefghij"), st.booleans()))
def test_vote_result_matches_the_naive_definition(
    voters: list[str], votes: dict[str, bool]
) -> None:
    yes = sum(1 for v in voters if votes.get(v) is True)
    no = sum(1 for v in voters if votes.get(v) is False)
    if yes * 2 > len(voters):
        expected = VoteResult.WON
    elif (len(voters) - no) * 2 > len(voters):
        expected = VoteResult.PENDING
    else:
        expected = VoteResult.LOST
    assert vote_result(voters, votes) is expected


@given(voter_ids, st.sets(st.sampled_from("abcdefghij")))
def test_quorum_active_means_more_than_half_of_voters_heard_from(
    voters: list[str], active: set[str]
) -> None:
    assert quorum_active(voters, active) is (len(set(voters) & active) * 2 > len(voters))


def test_empty_voter_set_commits_nothing_and_wins_nothing() -> None:
    assert committed_index([], {"a": 5}) == 0
    assert vote_result([], {"a": True}) is VoteResult.LOST
