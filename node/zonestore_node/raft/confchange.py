"""Single-server membership changes (thesis §4.1) and their log encoding.

Owns `ConfChange` (what a CONF_CHANGE entry carries), its bytes encoding (msgpack,
never pickle) and `apply_change`, the pure rule that turns one membership into the
next. Imports nothing from other zonestore_node packages; does no I/O.

Why single-server changes, taking effect when appended (thesis §4.1, not etcd's
joint consensus applied at commit): any two majorities of configurations that differ by
one voter overlap, so no joint phase is needed, and using the latest configuration in
the log — committed or not — keeps every server's view a function of its log alone
(a truncated log reverts its configuration). The leader allows one uncommitted change
at a time and only after it has committed an entry of its own term (the fix Ongaro
posted to raft-dev in 2015 for the single-server change bug). New voters should first
join as learners and be promoted once caught up (thesis §4.2.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from zonestore_node.raft.messages import ConfState


class ConfChangeOp(enum.IntEnum):
    ADD_VOTER = 1
    ADD_LEARNER = 2
    PROMOTE_LEARNER = 3
    REMOVE_MEMBER = 4


class ConfChangeError(ValueError):
    """A change that does not apply to the current membership."""


@dataclass(frozen=True, slots=True)
class ConfChange:
    """One membership change. ``context`` is opaque (e.g. the new member's address)."""

    op: ConfChangeOp
    node_id: str
    context: bytes = b""

    def to_bytes(self) -> bytes:
        out: bytes = msgpack.packb([1, int(self.op), self.node_id, self.context])
        return out

    @classmethod
    def from_bytes(cls, data: bytes) -> ConfChange:
        try:
            version, op, node_id, context = msgpack.unpackb(data, raw=False)
            if version != 1 or type(node_id) is not str or type(context) is not bytes:
                raise ValueError("bad conf change fields")
            return cls(ConfChangeOp(op), node_id, context)
        except (ValueError, TypeError, msgpack.ExtraData) as exc:
            raise ConfChangeError(f"undecodable conf change: {exc}") from exc


def apply_change(conf: ConfState, change: ConfChange) -> ConfState:
    """The membership after ``change``; raises `ConfChangeError` when it does not apply."""
    nid = change.node_id
    if not nid:
        raise ConfChangeError("empty node id")
    voters, learners = conf.voters, conf.learners
    match change.op:
        case ConfChangeOp.ADD_VOTER:
            if nid in voters or nid in learners:
                raise ConfChangeError(f"{nid} is already a member")
            return ConfState(voters | {nid}, learners)
        case ConfChangeOp.ADD_LEARNER:
            if nid in voters or nid in learners:
                raise ConfChangeError(f"{nid} is already a member")
            return ConfState(voters, learners | {nid})
        case ConfChangeOp.PROMOTE_LEARNER:
            if nid not in learners:
                raise ConfChangeError(f"{nid} is not a learner")
            return ConfState(voters | {nid}, learners - {nid})
        case ConfChangeOp.REMOVE_MEMBER:
            if nid not in voters and nid not in learners:
                raise ConfChangeError(f"{nid} is not a member")
            if voters == {nid}:
                raise ConfChangeError("cannot remove the last voter")
            return ConfState(voters - {nid}, learners - {nid})
    raise ConfChangeError(f"unknown op {change.op!r}")  # pragma: no cover
