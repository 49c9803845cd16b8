"""Majority arithmetic: the committed index from match indexes, and vote counting.

Owns only pure functions over voter sets; imports nothing from other zonestore_node
packages; does no I/O. Learners never appear here: callers pass voters only.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence


class VoteResult(enum.Enum):
    PENDING = 0
    WON = 1
    LOST = 2


def majority(n_voters: int) -> int:
    """The size of a quorum of ``n_voters`` voters."""
    return n_voters // 2 + 1


def quorum_index(match_indexes: Sequence[int]) -> int:
    """The largest index that a majority of the given voters' match indexes reach."""
    n = len(match_indexes)
    if n == 0:
        return 0
    return sorted(match_indexes, reverse=True)[majority(n) - 1]


def committed_index(voters: Collection[str], match_index: Mapping[str, int]) -> int:
    """The largest index that a majority of ``voters`` has (§5.3, §5.4: "replicated on a majority").

    A voter missing from ``match_index`` counts as 0. An empty voter set commits nothing.
    """
    return quorum_index([match_index.get(v, 0) for v in voters])


def vote_result(voters: Collection[str], votes: Mapping[str, bool]) -> VoteResult:
    """WON once a majority granted, LOST once a majority is out of reach (§5.2)."""
    granted = rejected = 0
    for v in voters:
        got = votes.get(v)
        if got is True:
            granted += 1
        elif got is False:
            rejected += 1
    q = majority(len(voters))
    if granted >= q:
        return VoteResult.WON
    if len(voters) - rejected >= q:
        return VoteResult.PENDING
    return VoteResult.LOST


def quorum_active(voters: Collection[str], active: Collection[str]) -> bool:
    """Check-quorum (thesis §6.2): a majority of voters was heard from recently."""
    return sum(1 for v in voters if v in active) >= majority(len(voters))
