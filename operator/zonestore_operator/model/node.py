"""What a node reports on GET /admin/status, as frozen values.

The contract (the node's admin API):
  {"node_id", "zone", "role": leader|follower|candidate|pre_candidate|learner, "term",
   "leader": id|null, "commit_index", "applied_index", "ready",
   "members": [{"id", "peer_address", "zone", "role": voter|learner, "match_index",
                "lag", "last_contact_ms", "healthy"}]}
Members' match_index/lag/health are meaningful only in the leader's answer.
Imports nothing from the rest of the operator.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class RaftRole(enum.Enum):
    LEADER = "leader"
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    PRE_CANDIDATE = "pre_candidate"
    LEARNER = "learner"


class Membership(enum.Enum):
    VOTER = "voter"
    LEARNER = "learner"


class NodeStatusError(ValueError):
    """An /admin/status body that does not follow the contract."""


@dataclass(frozen=True, slots=True)
class MemberInfo:
    id: str
    peer_address: str
    zone: str
    membership: Membership
    match_index: int = 0
    lag: int | None = None
    last_contact_ms: int | None = None
    healthy: bool = True


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """Invariant: applied_index <= commit_index."""

    node_id: str
    zone: str
    role: RaftRole
    term: int
    leader: str | None
    commit_index: int
    applied_index: int
    ready: bool
    members: tuple[MemberInfo, ...] = ()

    def member(self, member_id: str) -> MemberInfo | None:
        return next((m for m in self.members if m.id == member_id), None)


def _req(raw: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = raw.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise NodeStatusError(f"{where}.{key} must be {kind.__name__}, got {value!r}")
    return value


def _opt_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def parse_node_status(raw: Any) -> NodeStatus:
    if not isinstance(raw, Mapping):
        raise NodeStatusError(f"status must be a JSON object, got {type(raw).__name__}")
    try:
        role = RaftRole(raw.get("role"))
    except ValueError:
        raise NodeStatusError(f"status.role {raw.get('role')!r} is not a raft role") from None
    members = []
    for i, m in enumerate(raw.get("members") or []):
        where = f"status.members[{i}]"
        if not isinstance(m, Mapping):
            raise NodeStatusError(f"{where} must be an object")
        try:
            membership = Membership(m.get("role"))
        except ValueError:
            raise NodeStatusError(f"{where}.role must be voter or learner") from None
        members.append(
            MemberInfo(
                id=_req(m, "id", str, where),
                peer_address=str(m.get("peer_address", "")),
                zone=str(m.get("zone", "")),
                membership=membership,
                match_index=_opt_int(m, "match_index") or 0,
                lag=_opt_int(m, "lag"),
                last_contact_ms=_opt_int(m, "last_contact_ms"),
                healthy=bool(m.get("healthy", True)),
            )
        )
    leader = raw.get("leader")
    return NodeStatus(
        node_id=_req(raw, "node_id", str, "status"),
        zone=str(raw.get("zone", "")),
        role=role,
        term=_req(raw, "term", int, "status"),
        leader=leader if isinstance(leader, str) and leader else None,
        commit_index=_req(raw, "commit_index", int, "status"),
        applied_index=_req(raw, "applied_index", int, "status"),
        ready=bool(raw.get("ready", False)),
        members=tuple(members),
    )
