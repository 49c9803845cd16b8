"""The Datastore status as frozen values, and its round trip to the CR's `status` dict.

The status is the operator's contract with users and tests, and also its memory: the
planner reads the previous status to know since when a zone or a replica has been
unhealthy (`unhealthy_since`), whether the group was ever bootstrapped, and how many
replacement replicas it has started. Everything else is recomputed from observation on
every pass.

Times are timezone-aware UTC `datetime`s here and RFC 3339 strings ("...Z") in the dict.
Imports nothing from the rest of the operator.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any


class ConditionType(enum.Enum):
    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    QUORUM_AVAILABLE = "QuorumAvailable"
    ZONE_DEGRADED = "ZoneDegraded"
    # A spec change the running group cannot take (kstatus' "Stalled"): True until the
    # spec matches what runs again (reconcile.transitions).
    STALLED = "Stalled"
    # Whether the official Datastore clients can authenticate as the spec asks: False
    # for bearer tokens without client TLS (the clients send credentials only over TLS).
    CLIENT_AUTH_USABLE = "ClientAuthUsable"


class Phase(enum.Enum):
    PENDING = "Pending"
    BOOTSTRAPPING = "Bootstrapping"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    FAILING_OVER = "FailingOver"
    UNAVAILABLE = "Unavailable"


class ZoneState(enum.Enum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"  # some replicas unhealthy
    DOWN = "Down"  # no healthy replica (or all nodes NotReady), within the timeout
    FAILED = "Failed"  # down for longer than spec.failover.zoneTimeoutSeconds


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Condition:
    type: ConditionType
    status: bool | None  # None = Unknown
    reason: str
    message: str
    last_transition_time: datetime
    observed_generation: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "status": {True: "True", False: "False", None: "Unknown"}[self.status],
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": format_time(self.last_transition_time),
            "observedGeneration": self.observed_generation,
        }


@dataclass(frozen=True, slots=True)
class MemberStatus:
    pod: str
    zone: str
    role: str = "Unknown"  # Leader, Follower, Candidate, Learner, Unknown
    membership: str = "None"  # Voter, Learner, None
    applied_index: int = 0
    lag: int | None = None
    healthy: bool = False
    unhealthy_since: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pod": self.pod,
            "zone": self.zone,
            "role": self.role,
            "membership": self.membership,
            "appliedIndex": self.applied_index,
            "healthy": self.healthy,
        }
        if self.lag is not None:
            out["lag"] = self.lag
        if self.unhealthy_since is not None:
            out["unhealthySince"] = format_time(self.unhealthy_since)
        return out


@dataclass(frozen=True, slots=True)
class ZoneStatus:
    name: str
    state: ZoneState = ZoneState.HEALTHY
    replicas: int = 0
    ready_replicas: int = 0
    voters: int = 0
    extra_replicas: int = 0  # replacement replicas added here during a failover
    unhealthy_since: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "state": self.state.value,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "voters": self.voters,
            "extraReplicas": self.extra_replicas,
        }
        if self.unhealthy_since is not None:
            out["unhealthySince"] = format_time(self.unhealthy_since)
        return out


@dataclass(frozen=True, slots=True)
class Endpoints:
    client: str = ""
    leader: str = ""
    readonly: str = ""
    peers: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "leader": self.leader,
            "readonly": self.readonly,
            "peers": self.peers,
        }


@dataclass(frozen=True, slots=True)
class CertStatus:
    """A certificate as read from its Secret. Invariant: not_before < not_after."""

    secret_name: str
    not_before: datetime
    not_after: datetime
    renew_after: datetime | None = None  # None: nobody renews it (a CA, a user's cert)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "secretName": self.secret_name,
            "notBefore": format_time(self.not_before),
            "notAfter": format_time(self.not_after),
        }
        if self.renew_after is not None:
            out["renewAfter"] = format_time(self.renew_after)
        return out


@dataclass(frozen=True, slots=True)
class CertificatesStatus:
    ca: CertStatus | None = None
    peer: CertStatus | None = None
    client: CertStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        items = (("ca", self.ca), ("peer", self.peer), ("client", self.client))
        return {k: v.to_dict() for k, v in items if v is not None}


def _parse_cert(raw: Any) -> CertStatus | None:
    if not isinstance(raw, Mapping):
        return None
    not_before, not_after = parse_time(raw.get("notBefore")), parse_time(raw.get("notAfter"))
    if not_before is None or not_after is None:
        return None
    return CertStatus(
        secret_name=str(raw.get("secretName", "")),
        not_before=not_before,
        not_after=not_after,
        renew_after=parse_time(raw.get("renewAfter")),
    )


@dataclass(frozen=True, slots=True)
class DatastoreStatus:
    observed_generation: int = 0
    phase: Phase = Phase.PENDING
    leader: str | None = None
    term: int = 0
    bootstrapped: bool = False
    selector: str = ""
    replicas_per_zone: int = 0
    ready_replicas: int = 0
    summary_replicas: str = ""
    summary_zones: str = ""
    conditions: tuple[Condition, ...] = ()
    members: tuple[MemberStatus, ...] = ()
    zones: tuple[ZoneStatus, ...] = ()
    endpoints: Endpoints = field(default_factory=Endpoints)
    automatic_replacements: int = 0
    certificates: CertificatesStatus = field(default_factory=CertificatesStatus)

    def condition(self, kind: ConditionType) -> Condition | None:
        return next((c for c in self.conditions if c.type is kind), None)

    def member(self, pod: str) -> MemberStatus | None:
        return next((m for m in self.members if m.pod == pod), None)

    def zone(self, name: str) -> ZoneStatus | None:
        return next((z for z in self.zones if z.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "observedGeneration": self.observed_generation,
            "phase": self.phase.value,
            "leader": self.leader or "",
            "term": self.term,
            "bootstrapped": self.bootstrapped,
            "selector": self.selector,
            "replicasPerZone": self.replicas_per_zone,
            "readyReplicas": self.ready_replicas,
            "summary": {"replicas": self.summary_replicas, "zones": self.summary_zones},
            "conditions": [c.to_dict() for c in self.conditions],
            "members": [m.to_dict() for m in self.members],
            "zones": [z.to_dict() for z in self.zones],
            "endpoints": self.endpoints.to_dict(),
            "automaticReplacements": self.automatic_replacements,
            "certificates": self.certificates.to_dict(),
        }


def _int(raw: Mapping[str, Any], key: str, default: int = 0) -> int:
    value = raw.get(key, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _parse_condition(raw: Mapping[str, Any]) -> Condition | None:
    try:
        kind = ConditionType(raw.get("type"))
    except ValueError:
        return None
    status = {"True": True, "False": False}.get(str(raw.get("status")))
    return Condition(
        type=kind,
        status=status,
        reason=str(raw.get("reason", "")),
        message=str(raw.get("message", "")),
        last_transition_time=parse_time(raw.get("lastTransitionTime"))
        or datetime.fromtimestamp(0, UTC),
        observed_generation=_int(raw, "observedGeneration"),
    )


def _list(raw: Any) -> Sequence[Mapping[str, Any]]:
    if not isinstance(raw, list):
        return ()
    return [item for item in raw if isinstance(item, Mapping)]


def parse_status(raw_status: Mapping[str, Any] | None) -> DatastoreStatus:
    """Read back what a previous pass wrote. Tolerant: unknown or malformed parts are
    dropped (they are recomputed), never fatal."""
    raw = raw_status if isinstance(raw_status, Mapping) else {}
    try:
        phase = Phase(raw.get("phase", Phase.PENDING.value))
    except ValueError:
        phase = Phase.PENDING
    conditions = tuple(c for c in map(_parse_condition, _list(raw.get("conditions"))) if c)
    members = tuple(
        MemberStatus(
            pod=str(m["pod"]),
            zone=str(m.get("zone", "")),
            role=str(m.get("role", "Unknown")),
            membership=str(m.get("membership", "None")),
            applied_index=_int(m, "appliedIndex"),
            lag=m["lag"] if isinstance(m.get("lag"), int) else None,
            healthy=bool(m.get("healthy", False)),
            unhealthy_since=parse_time(m.get("unhealthySince")),
        )
        for m in _list(raw.get("members"))
        if "pod" in m
    )
    zones = []
    for z in _list(raw.get("zones")):
        if "name" not in z:
            continue
        try:
            state = ZoneState(z.get("state", ZoneState.HEALTHY.value))
        except ValueError:
            state = ZoneState.HEALTHY
        zones.append(
            ZoneStatus(
                name=str(z["name"]),
                state=state,
                replicas=_int(z, "replicas"),
                ready_replicas=_int(z, "readyReplicas"),
                voters=_int(z, "voters"),
                extra_replicas=_int(z, "extraReplicas"),
                unhealthy_since=parse_time(z.get("unhealthySince")),
            )
        )
    summary = raw.get("summary") if isinstance(raw.get("summary"), Mapping) else {}
    assert isinstance(summary, Mapping)
    ep = raw.get("endpoints") if isinstance(raw.get("endpoints"), Mapping) else {}
    assert isinstance(ep, Mapping)
    certs = raw.get("certificates") if isinstance(raw.get("certificates"), Mapping) else {}
    assert isinstance(certs, Mapping)
    return DatastoreStatus(
        observed_generation=_int(raw, "observedGeneration"),
        phase=phase,
        leader=str(raw["leader"]) if raw.get("leader") else None,
        term=_int(raw, "term"),
        bootstrapped=bool(raw.get("bootstrapped", False)),
        selector=str(raw.get("selector", "")),
        replicas_per_zone=_int(raw, "replicasPerZone"),
        ready_replicas=_int(raw, "readyReplicas"),
        summary_replicas=str(summary.get("replicas", "")),
        summary_zones=str(summary.get("zones", "")),
        conditions=conditions,
        members=members,
        zones=tuple(zones),
        endpoints=Endpoints(
            client=str(ep.get("client", "")),
            leader=str(ep.get("leader", "")),
            readonly=str(ep.get("readonly", "")),
            peers=str(ep.get("peers", "")),
        ),
        automatic_replacements=_int(raw, "automaticReplacements"),
        certificates=CertificatesStatus(
            ca=_parse_cert(certs.get("ca")),
            peer=_parse_cert(certs.get("peer")),
            client=_parse_cert(certs.get("client")),
        ),
    )


def set_condition(
    conditions: Sequence[Condition],
    kind: ConditionType,
    status: bool | None,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> tuple[Condition, ...]:
    """Return `conditions` with `kind` set; lastTransitionTime moves only when the
    status flips (API conventions), reason/message/observedGeneration always update."""
    previous = next((c for c in conditions if c.type is kind), None)
    changed = previous is None or previous.status != status
    new = Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
        observed_generation=generation,
    )
    if previous is not None and not changed:
        new = replace(new, last_transition_time=previous.last_transition_time)
    out = [c for c in conditions if c.type is not kind]
    out.append(new)
    order = list(ConditionType)
    return tuple(sorted(out, key=lambda c: order.index(c.type)))
