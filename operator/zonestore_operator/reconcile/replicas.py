"""Steps 1-2 of a planning pass (see reconcile.plan): the View of one pass (spec, previous
status, observation, now) and the Replica values derived from it: which pods and members
exist, whether each is healthy, since when it is not, whether it has failed or retires,
and each zone's state. Pure; no I/O, no clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from zonestore_operator.model.node import MemberInfo, Membership, NodeStatus, RaftRole
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.model.status import DatastoreStatus, ZoneState
from zonestore_operator.reconcile.observation import Observation, PodObservation
from zonestore_operator.resources import meta
from zonestore_operator.resources.certs import Entropy


@dataclass(frozen=True, slots=True)
class Replica:
    """Everything the planner knows about one replica (a pod, a member, or both)."""

    id: str
    zone: str
    ordinal: int
    pod: PodObservation | None
    status: NodeStatus | None
    info: MemberInfo | None  # from the leader's member list
    healthy: bool
    unhealthy_since: datetime | None
    failed: bool
    retiring: bool

    @property
    def membership(self) -> Membership | None:
        return self.info.membership if self.info else None

    @property
    def is_voter(self) -> bool:
        return self.membership is Membership.VOTER

    @property
    def is_learner(self) -> bool:
        return self.membership is Membership.LEARNER


def _ordinal(ref: DatastoreRef, zone: str, member_id: str) -> int:
    prefix = meta.statefulset_name(ref, zone) + "-"
    tail = member_id[len(prefix) :] if member_id.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else 10_000


def _leader_status(observation: Observation) -> NodeStatus | None:
    leaders = [s for s in observation.statuses.values() if s.role is RaftRole.LEADER]
    return max(leaders, key=lambda s: s.term, default=None)


def _since(previous: datetime | None, healthy: bool, now: datetime) -> datetime | None:
    return None if healthy else previous or now


def expired(since: datetime | None, now: datetime, timeout_s: int) -> bool:
    return since is not None and now - since >= timedelta(seconds=timeout_s)


def zone_rank(spec: DatastoreSpec, zone: str) -> int:
    return spec.zones.index(zone) if zone in spec.zones else len(spec.zones)


class View:
    """The inputs of one planning pass and the facts derived from them first (steps 1-2:
    the leader's view, each replica's health and failure clock, zone states)."""

    def __init__(
        self,
        ref: DatastoreRef,
        spec: DatastoreSpec,
        previous: DatastoreStatus,
        obs: Observation,
        now: datetime,
        entropy: Entropy,
    ) -> None:
        self.ref, self.spec, self.prev, self.obs, self.now = ref, spec, previous, obs, now
        self.entropy = entropy
        self.timeout = spec.failover.zone_timeout_seconds
        self.leader_status = _leader_status(obs)
        self.leader = self.leader_status.node_id if self.leader_status else None
        self.bootstrapped = previous.bootstrapped or self.leader is not None

    # -- step 2: replicas, zones ------------------------------------------------------

    def zone_down_nodes(self, zone: str) -> bool:
        nodes = self.obs.zone_nodes.get(zone, ())
        return bool(nodes) and not any(self.obs.node_ready.get(n, False) for n in nodes)

    def targets(self) -> dict[str, int]:
        """Pods each zone should have, before releasing replacements."""
        return {
            zone: self.spec.replicas_per_zone
            + (z.extra_replicas if (z := self.prev.zone(zone)) else 0)
            for zone in self.spec.zones
        }

    def replicas(self, targets: Mapping[str, int]) -> list[Replica]:
        ids: dict[str, str] = {}  # id -> zone
        for zone, count in targets.items():
            sts = self.obs.statefulsets.get(zone)
            for ordinal in range(max(count, sts.replicas if sts else 0)):
                ids[meta.pod_name(self.ref, zone, ordinal)] = zone
        for observed in self.obs.pods.values():
            ids.setdefault(observed.name, observed.zone)
        leader_members = self.leader_status.members if self.leader_status else ()
        for listed in leader_members:
            ids.setdefault(listed.id, listed.zone)
        out = []
        for member_id, zone in ids.items():
            pod = self.obs.pods.get(member_id)
            status = self.obs.statuses.get(member_id)
            info = self.leader_status.member(member_id) if self.leader_status else None
            node_ok = (
                pod is not None
                and (pod.node_name is None or self.obs.node_ready.get(pod.node_name, True))
                and not self.zone_down_nodes(zone)
            )
            in_contact = member_id == self.leader or info is None or info.healthy
            healthy = pod is not None and pod.running and node_ok and status is not None
            healthy = healthy and in_contact
            prev = self.prev.member(member_id)
            # No failure clock runs before the group exists: bootstrap may be slow.
            since = _since(
                prev.unhealthy_since if prev else None, healthy or not self.bootstrapped, self.now
            )
            ordinal = pod.ordinal if pod else _ordinal(self.ref, zone, member_id)
            out.append(
                Replica(
                    id=member_id,
                    zone=zone,
                    ordinal=ordinal,
                    pod=pod,
                    status=status,
                    info=info,
                    healthy=healthy,
                    unhealthy_since=since,
                    failed=self.spec.failover.enabled and expired(since, self.now, self.timeout),
                    retiring=zone not in targets or ordinal >= targets[zone],
                )
            )
        out.sort(key=lambda r: (zone_rank(self.spec, r.zone), r.ordinal, r.id))
        return out

    def zone_states(self, replicas: list[Replica]) -> dict[str, tuple[ZoneState, datetime | None]]:
        states = {}
        for zone in self.spec.zones:
            mine = [r for r in replicas if r.zone == zone and not r.retiring]
            healthy = [r for r in mine if r.healthy]
            down = not healthy or self.zone_down_nodes(zone)
            prev = self.prev.zone(zone)
            since = _since(
                prev.unhealthy_since if prev else None, not down or not self.bootstrapped, self.now
            )
            if not down:
                state = ZoneState.HEALTHY if len(healthy) == len(mine) else ZoneState.DEGRADED
            elif expired(since, self.now, self.timeout) and self.bootstrapped:
                state = ZoneState.FAILED
            else:
                state = ZoneState.DOWN
            states[zone] = (state, since)
        return states

    # -- step 3: desired voters ---------------------------------------------------------

    def caught_up(self, r: Replica) -> bool:
        if r.id == self.leader:
            return True
        lag = r.info.lag if r.info else None
        return r.healthy and lag is not None and lag <= self.spec.failover.catch_up_lag_entries
