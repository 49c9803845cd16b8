"""Why a request to the replica group did not (or may not) take effect.

Raised by the group (replica/group.py) and its parts, mapped to gRPC statuses by the API
layer. Imports nothing of the package, so every module of it may raise them.
"""

from __future__ import annotations


class NotLeader(Exception):
    """This replica cannot take the request; `leader` names who can (None: unknown)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")
        self.leader = leader


class ProposalLost(Exception):
    """The proposal was overwritten by another leader's entry: it did not take effect."""


class OutcomeUnknown(Exception):
    """The proposal is in the log but its fate cannot be learned here: it may commit."""
