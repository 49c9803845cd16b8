"""The planner: a pure function from what the Datastore asks for (spec), what the operator
remembers (previous status) and what it sees now (Observation) to what should be done.

    plan(ref, spec, previous, observation, now, entropy) -> Plan

No I/O, no clock, no global RNG: `now` and `entropy` (bytes for keys, serials and the
admin token) are arguments. The plan is level-based: it never depends on
what changed, only on the current state, so running it again after its actions took
effect yields no further actions (tests check this fixpoint).

How a pass decides (each step reads only the values computed before it):

1. The membership view is the leader's /admin/status (its member list carries each
   member's lag and health). Without a reachable leader no membership action is planned.
2. A replica is healthy when its pod is running on a Ready node, its admin API answers,
   and the leader (if any) reports it in contact. An unhealthy replica remembers since
   when (status.members[].unhealthySince); past spec.failover.zoneTimeoutSeconds it is
   *failed*. A zone with no healthy replica is Down, and Failed past the same timeout.
3. The desired voter set keeps every voter that is not failed or retiring, adds caught-up
   learners (lag <= catchUpLagEntries) from the zones with the fewest voters, swaps voters
   out of over-represented zones when another zone has a caught-up learner, and only when
   no replacement exists keeps failed voters (removing a voter nobody replaces only
   shrinks the group). When failed voters are kept, it asks for a replacement replica in
   the healthy zone with the fewest replicas, up to spec.failover.maxAutomaticReplacements.
4. Membership actions, in this order, each guarded so that the voter count never drops
   below spec.voters and the leader is never removed while it leads:
     add learner (running pod that is not a member)
     -> promote (caught-up learner in the desired set)
     -> transfer leadership (leader failed, retiring, outside the desired set, or
        outside spec.preferredLeaderZone) to a healthy caught-up voter
     -> remove (voter outside the desired set, once promotions are done; failed or
        retiring learner).
   The caller executes the first action and plans again (Raft changes membership one
   server at a time), so the order above is also the order of execution.
5. Replacements are released once every zone is healthy again: the top ordinal of the
   zone becomes *retiring*, step 3 moves its vote elsewhere, and the StatefulSet shrinks
   only when that pod holds no vote.
6. Pod actions: role labels from observed roles; with updateStrategy RollingUpdate, one
   out-of-date pod at a time is deleted (learners, then followers, then the leader after
   its leadership moved), only while the whole group is healthy. A pod stuck Terminating
   on a NotReady node is force-deleted (the kubelet that would confirm the deletion is
   gone, so the StatefulSet never replaces it) once both its member's unhealthySince and
   the node's NotReady transition are older than spec.failover.zoneTimeoutSeconds, and
   only while the group keeps a quorum of healthy voters without it.
7. The new status: members, zones, conditions (with lastTransitionTime moving only on a
   flip), phase, endpoints; and Events for zone and quorum transitions.
8. Credentials (reconcile.credentials): Secrets to create or rotate, cert-manager
   Certificates, certificate validity for the status, and Events for issuance.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from zonestore_operator.model.node import MemberInfo, Membership, NodeStatus, RaftRole
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec, UpdateStrategy
from zonestore_operator.model.status import (
    ConditionType,
    DatastoreStatus,
    Endpoints,
    MemberStatus,
    Phase,
    ZoneState,
    ZoneStatus,
    set_condition,
)
from zonestore_operator.reconcile import credentials
from zonestore_operator.reconcile.observation import Observation, PodObservation
from zonestore_operator.resources import meta
from zonestore_operator.resources.certs import Entropy
from zonestore_operator.resources.desired import desired_objects


class ActionKind(enum.Enum):
    ADD_LEARNER = "AddLearner"
    PROMOTE = "Promote"
    TRANSFER_LEADER = "TransferLeader"
    REMOVE_MEMBER = "RemoveMember"


@dataclass(frozen=True, slots=True)
class MemberAction:
    kind: ActionKind
    member: str  # the node id (= pod name) acted on; for a transfer, the new leader
    zone: str = ""
    peer_address: str = ""  # for ADD_LEARNER
    reason: str = ""


class PodActionKind(enum.Enum):
    SET_ROLE_LABEL = "SetRoleLabel"
    DELETE_FOR_UPDATE = "DeleteForUpdate"
    # DELETE with gracePeriodSeconds=0 and a UID precondition, for a pod stuck
    # Terminating on a dead node (step 6).
    FORCE_DELETE = "ForceDelete"


@dataclass(frozen=True, slots=True)
class PodAction:
    kind: PodActionKind
    pod: str
    role: str | None = None  # for SET_ROLE_LABEL; None removes the label
    uid: str | None = None  # for FORCE_DELETE: only this incarnation of the pod
    reason: str = ""  # for FORCE_DELETE: the Event's and the condition's message


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Plan:
    objects: list[dict[str, Any]]
    member_actions: tuple[MemberAction, ...]
    pod_actions: tuple[PodAction, ...]
    status: DatastoreStatus
    events: tuple[Event, ...] = ()
    zone_replicas: Mapping[str, int] = field(default_factory=dict)
    # Written before `objects` (the pods mount them), in order.
    secret_writes: tuple[credentials.SecretWrite, ...] = ()


@dataclass(frozen=True, slots=True)
class _Replica:
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


def _expired(since: datetime | None, now: datetime, timeout_s: int) -> bool:
    return since is not None and now - since >= timedelta(seconds=timeout_s)


def _zone_rank(spec: DatastoreSpec, zone: str) -> int:
    return spec.zones.index(zone) if zone in spec.zones else len(spec.zones)


class _Planner:
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

    def replicas(self, targets: Mapping[str, int]) -> list[_Replica]:
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
                _Replica(
                    id=member_id,
                    zone=zone,
                    ordinal=ordinal,
                    pod=pod,
                    status=status,
                    info=info,
                    healthy=healthy,
                    unhealthy_since=since,
                    failed=self.spec.failover.enabled and _expired(since, self.now, self.timeout),
                    retiring=zone not in targets or ordinal >= targets[zone],
                )
            )
        out.sort(key=lambda r: (_zone_rank(self.spec, r.zone), r.ordinal, r.id))
        return out

    def zone_states(self, replicas: list[_Replica]) -> dict[str, tuple[ZoneState, datetime | None]]:
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
            elif _expired(since, self.now, self.timeout) and self.bootstrapped:
                state = ZoneState.FAILED
            else:
                state = ZoneState.DOWN
            states[zone] = (state, since)
        return states

    # -- step 3: desired voters ---------------------------------------------------------

    def caught_up(self, r: _Replica) -> bool:
        if r.id == self.leader:
            return True
        lag = r.info.lag if r.info else None
        return r.healthy and lag is not None and lag <= self.spec.failover.catch_up_lag_entries

    def desired_voters(self, replicas: list[_Replica], failed_zones: set[str]) -> list[_Replica]:
        def unusable(r: _Replica) -> bool:
            return r.failed or r.retiring or r.zone in failed_zones

        voters = [r for r in replicas if r.is_voter]
        chosen = [r for r in voters if not unusable(r)]
        candidates = [r for r in replicas if r.is_learner and not unusable(r) and self.caught_up(r)]
        count: dict[str, int] = {}

        def recount() -> None:
            count.clear()
            for r in chosen:
                count[r.zone] = count.get(r.zone, 0) + 1

        def droppable(zone: str) -> _Replica | None:
            pool = [r for r in chosen if r.zone == zone and r.id != self.leader]
            # Drop the unhealthy first, then the highest ordinal.
            return max(pool, key=lambda r: (not r.healthy, r.ordinal), default=None)

        def take(zone_filter: Iterable[str] | None = None) -> _Replica | None:
            pool = [c for c in candidates if zone_filter is None or c.zone in zone_filter]
            best = min(
                pool,
                key=lambda c: (count.get(c.zone, 0), _zone_rank(self.spec, c.zone), c.ordinal),
                default=None,
            )
            if best is not None:
                candidates.remove(best)
            return best

        recount()
        while len(chosen) > self.spec.voters:
            zone = max(count, key=lambda z: (count[z], _zone_rank(self.spec, z)))
            victim = droppable(zone) or next(r for r in chosen if r.id != self.leader)
            chosen.remove(victim)
            recount()
        while len(chosen) < self.spec.voters and (added := take()) is not None:
            chosen.append(added)
            recount()
        # Rebalance: move a vote from the fullest zone to the emptiest zone that has a
        # caught-up learner, while they differ by more than one.
        while candidates:
            zmin = min(
                {c.zone for c in candidates},
                key=lambda z: (count.get(z, 0), _zone_rank(self.spec, z)),
            )
            zmax = max(count, key=lambda z: (count[z], -_zone_rank(self.spec, z)), default=None)
            if zmax is None or count[zmax] - count.get(zmin, 0) <= 1:
                break
            outgoing = droppable(zmax)
            swap_in = take([zmin])
            if outgoing is None or swap_in is None:
                break
            chosen.remove(outgoing)
            chosen.append(swap_in)
            recount()
        # Nobody to replace them: keep the unusable voters (healthiest first).
        for r in sorted(
            (v for v in voters if v not in chosen), key=lambda r: (r.failed, not r.healthy)
        ):
            if len(chosen) >= self.spec.voters:
                break
            chosen.append(r)
        return chosen

    # -- step 4: membership actions -------------------------------------------------------

    def member_actions(
        self, replicas: list[_Replica], desired: list[_Replica], failed_zones: set[str]
    ) -> list[MemberAction]:
        if self.leader_status is None:
            return []
        actions: list[MemberAction] = []
        by_id = {r.id: r for r in replicas}
        voters = [r for r in replicas if r.is_voter]
        desired_ids = {r.id for r in desired}
        for r in replicas:
            if r.info is None and r.healthy and not r.retiring and r.zone not in failed_zones:
                actions.append(
                    MemberAction(
                        ActionKind.ADD_LEARNER,
                        r.id,
                        r.zone,
                        meta.peer_address(self.ref, self.spec, r.id),
                        "new replica joins as a learner",
                    )
                )
        promotions = [r for r in desired if r.is_learner]
        for r in promotions:
            why = (
                "replaces a failed voter"
                if failed_zones or any(v.failed for v in voters)
                else "rebalances voters"
            )
            actions.append(
                MemberAction(ActionKind.PROMOTE, r.id, r.zone, reason=f"caught up; {why}")
            )
        leader = by_id.get(self.leader or "")
        if not promotions and leader is not None:
            target = self.transfer_target(leader, voters, desired_ids, failed_zones)
            if target is not None:
                actions.append(
                    MemberAction(
                        ActionKind.TRANSFER_LEADER,
                        target.id,
                        target.zone,
                        reason=f"move leadership from {leader.id} ({leader.zone})",
                    )
                )
        if not promotions:
            removable = sorted(
                (v for v in voters if v.id not in desired_ids and v.id != self.leader),
                key=lambda v: (not (v.failed or v.zone in failed_zones), v.healthy),
            )
            if removable and len(voters) - 1 >= self.spec.voters:
                v = removable[0]
                why = "failed" if v.failed or v.zone in failed_zones else "voters rebalanced"
                actions.append(MemberAction(ActionKind.REMOVE_MEMBER, v.id, v.zone, reason=why))
        for r in replicas:
            gone = r.failed or r.retiring or r.zone not in self.spec.zones
            if r.is_learner and r.id not in desired_ids and gone:
                why = "retired" if r.retiring else "failed"
                actions.append(MemberAction(ActionKind.REMOVE_MEMBER, r.id, r.zone, reason=why))
        return actions

    def transfer_target(
        self,
        leader: _Replica,
        voters: list[_Replica],
        desired_ids: set[str],
        failed_zones: set[str],
    ) -> _Replica | None:
        preferred = self.spec.preferred_leader_zone
        must_move = (
            leader.id not in desired_ids
            or leader.zone in failed_zones
            or leader.retiring
            or leader.failed
        )
        options = [
            v
            for v in voters
            if v.id != leader.id
            and v.id in desired_ids
            and v.zone not in failed_zones
            and self.caught_up(v)
        ]
        if must_move:
            # Prefer the preferred zone, then a zone other than the leader's.
            return min(
                options,
                key=lambda v: (
                    v.zone != preferred,
                    v.zone == leader.zone,
                    v.info.lag if v.info and v.info.lag is not None else 0,
                    _zone_rank(self.spec, v.zone),
                    v.ordinal,
                ),
                default=None,
            )
        if preferred and leader.zone != preferred:
            in_zone = [v for v in options if v.zone == preferred]
            return min(in_zone, key=lambda v: v.ordinal, default=None)
        return None

    # -- step 5/6: replicas per zone, pod actions -------------------------------------------

    def zone_replicas(self, targets: Mapping[str, int], replicas: list[_Replica]) -> dict[str, int]:
        """A zone's StatefulSet never shrinks below a pod that still holds a vote."""
        out = {}
        for zone, target in targets.items():
            voting = [r.ordinal + 1 for r in replicas if r.zone == zone and r.is_voter]
            out[zone] = max([target, *voting])
        return out

    def pod_actions(
        self,
        replicas: list[_Replica],
        member_actions: list[MemberAction],
        calm: bool,
        zone_replicas: Mapping[str, int],
    ) -> list[PodAction]:
        actions = []
        if self.leader_status is not None:
            for r in replicas:
                if r.pod is None or r.pod.deleting or r.ordinal >= zone_replicas.get(r.zone, 0):
                    continue  # gone, going, or about to be scaled away
                if r.id == self.leader:
                    role: str | None = meta.ROLE_LEADER
                elif r.is_voter:
                    role = meta.ROLE_FOLLOWER
                elif r.is_learner:
                    role = meta.ROLE_LEARNER
                else:
                    role = None
                if role != r.pod.role_label:
                    actions.append(PodAction(PodActionKind.SET_ROLE_LABEL, r.id, role))
        for r in replicas:
            reason = self.stuck_on_dead_node(r, replicas)
            if reason and r.pod is not None:
                actions.append(
                    PodAction(PodActionKind.FORCE_DELETE, r.id, uid=r.pod.uid, reason=reason)
                )
        if (
            self.spec.update_strategy is UpdateStrategy.ROLLING_UPDATE
            and calm
            and not member_actions
        ):
            outdated = [
                r
                for r in replicas
                if r.pod is not None
                and (sts := self.obs.statefulsets.get(r.zone)) is not None
                and sts.update_revision
                and r.pod.revision
                and r.pod.revision != sts.update_revision
            ]
            order = sorted(
                outdated, key=lambda r: (r.id == self.leader, r.is_voter, r.zone, r.ordinal)
            )
            if order and order[0].id != self.leader:
                actions.append(PodAction(PodActionKind.DELETE_FOR_UPDATE, order[0].id))
        return actions

    def stuck_on_dead_node(self, r: _Replica, replicas: list[_Replica]) -> str | None:
        """Why `r`'s pod should be force-deleted, or None. The clock is the one the
        planner already keeps (the member's unhealthySince: a Terminating pod is not
        running, a NotReady node not healthy), checked against the node's own record of
        when it went NotReady, so an older, unrelated unhealthiness cannot shorten the
        wait for a node that only just died."""
        pod = r.pod
        if pod is None or not pod.deleting or not pod.uid or not pod.node_name:
            return None
        if not self.spec.failover.enabled or self.leader is None:
            return None
        if self.obs.node_ready.get(pod.node_name, True):
            return None  # Ready, or no Node object (the pod GC controller handles that)
        node_since = self.obs.node_not_ready_since.get(pod.node_name)
        if not _expired(r.unhealthy_since, self.now, self.timeout):
            return None
        if node_since is not None and not _expired(node_since, self.now, self.timeout):
            return None
        voters = [v for v in replicas if v.is_voter]
        others = [v for v in voters if v.id != r.id and v.healthy]
        if len(others) < len(voters) // 2 + 1:
            return None  # the group needs this member back, not a second incarnation
        return (
            f"force-deleting {r.id}: Terminating on NotReady node {pod.node_name} "
            f"for over {self.timeout}s"
        )

    def leader_update_transfer(
        self, replicas: list[_Replica], desired_ids: set[str]
    ) -> MemberAction | None:
        """When only the leader is out of date, move leadership to an updated voter."""
        if self.spec.update_strategy is not UpdateStrategy.ROLLING_UPDATE or self.leader is None:
            return None

        def outdated(r: _Replica) -> bool:
            sts = self.obs.statefulsets.get(r.zone)
            return bool(
                r.pod
                and sts
                and sts.update_revision
                and r.pod.revision
                and r.pod.revision != sts.update_revision
            )

        stale = [r for r in replicas if outdated(r)]
        if [r.id for r in stale] != [self.leader]:
            return None
        options = [
            r
            for r in replicas
            if r.is_voter and r.id != self.leader and r.id in desired_ids and self.caught_up(r)
        ]
        target = min(
            options, key=lambda r: (_zone_rank(self.spec, r.zone), r.ordinal), default=None
        )
        if target is None:
            return None
        return MemberAction(
            ActionKind.TRANSFER_LEADER,
            target.id,
            target.zone,
            reason="leader restarts last for the update",
        )

    # -- the pass ---------------------------------------------------------------------------

    def run(self) -> Plan:
        targets = self.targets()
        replicas = self.replicas(targets)
        zones = self.zone_states(replicas)
        all_healthy = all(state is ZoneState.HEALTHY for state, _ in zones.values()) and not any(
            r.failed or not r.healthy for r in replicas if not r.retiring
        )
        # Step 5: release one replacement per zone once everything is healthy again.
        if all_healthy:
            for zone, target in targets.items():
                if target > self.spec.replicas_per_zone:
                    targets[zone] = target - 1
            replicas = self.replicas(targets)
        failed_zones = (
            {z for z, (s, _) in zones.items() if s is ZoneState.FAILED}
            if self.spec.failover.enabled
            else set()
        )
        voters = [r for r in replicas if r.is_voter]
        if self.leader_status is not None and self.spec.failover.enabled:
            desired = self.desired_voters(replicas, failed_zones)
        else:
            desired = voters
        # Step 3, replacements: failed voters kept for want of a replacement.
        kept_failed = [r for r in desired if r.failed or r.zone in failed_zones]
        pending = [
            r
            for r in replicas
            if r.zone not in failed_zones
            and not r.failed
            and not r.retiring
            and not r.is_voter
            and (r.info is None or not self.caught_up(r))
        ]
        extra_total = sum(t - self.spec.replicas_per_zone for t in targets.values())
        events: list[Event] = []
        if (
            kept_failed
            and len(pending) < len(kept_failed)
            and extra_total < self.spec.failover.max_automatic_replacements
            and self.leader_status is not None
        ):
            healthy_zones = [z for z in self.spec.zones if z not in failed_zones]
            if healthy_zones:
                zone = min(
                    healthy_zones,
                    key=lambda z: (targets[z], _zone_rank(self.spec, z)),
                )
                targets[zone] += 1
                events.append(
                    Event(
                        "Normal",
                        "ReplacementAdded",
                        f"adding a replacement replica in zone {zone} for failed voter "
                        f"{kept_failed[0].id}",
                    )
                )
        member_actions = self.member_actions(replicas, desired, failed_zones)
        desired_ids = {r.id for r in desired}
        if not member_actions and all_healthy:
            update_transfer = self.leader_update_transfer(replicas, desired_ids)
            if update_transfer is not None:
                member_actions.append(update_transfer)
        zone_replicas = self.zone_replicas(targets, replicas)
        calm = all_healthy and all(
            r.pod is not None and r.pod.ready and not r.pod.deleting
            for r in replicas
            if not r.retiring
        )
        pod_actions = self.pod_actions(replicas, member_actions, calm, zone_replicas)
        status, status_events = self.status(
            replicas, zones, zone_replicas, member_actions, pod_actions, failed_zones
        )
        creds = credentials.plan_credentials(
            self.ref, self.spec, self.obs.secrets, self.prev.certificates, self.now, self.entropy
        )
        status = replace(status, certificates=creds.certificates)
        events += [Event(n.type, n.reason, n.message) for n in creds.notices]
        objects = [dict(o) for o in creds.objects] + desired_objects(
            self.ref, self.spec, zone_replicas, status.bootstrapped, self.obs.operator_namespace
        )
        return Plan(
            objects=objects,
            member_actions=tuple(member_actions),
            pod_actions=tuple(pod_actions),
            status=status,
            events=tuple(events + status_events),
            zone_replicas=zone_replicas,
            secret_writes=creds.writes,
        )

    # -- step 7: status ---------------------------------------------------------------------

    def status(
        self,
        replicas: list[_Replica],
        zones: Mapping[str, tuple[ZoneState, datetime | None]],
        zone_replicas: Mapping[str, int],
        member_actions: list[MemberAction],
        pod_actions: list[PodAction],
        failed_zones: set[str],
    ) -> tuple[DatastoreStatus, list[Event]]:
        spec, ref, gen, now = self.spec, self.ref, self.ref.generation, self.now
        events: list[Event] = []
        members = []
        for r in replicas:
            own = r.status
            if r.id == self.leader:
                role = "Leader"
            elif own is not None and r.healthy:
                role = {
                    RaftRole.FOLLOWER: "Follower",
                    RaftRole.LEARNER: "Learner",
                    RaftRole.CANDIDATE: "Candidate",
                    RaftRole.PRE_CANDIDATE: "Candidate",
                    RaftRole.LEADER: "Follower",  # a stale leader of an older term
                }[own.role]
            else:
                role = "Unknown"
            membership = {Membership.VOTER: "Voter", Membership.LEARNER: "Learner", None: "None"}[
                r.membership
            ]
            prev = self.prev.member(r.id)
            members.append(
                MemberStatus(
                    pod=r.id,
                    zone=r.zone,
                    role=role,
                    membership=membership,
                    applied_index=own.applied_index if own else (prev.applied_index if prev else 0),
                    lag=r.info.lag if r.info else None,
                    healthy=r.healthy,
                    unhealthy_since=r.unhealthy_since,
                )
            )
        zone_statuses = []
        for zone in spec.zones:
            state, since = zones[zone]
            mine = [r for r in replicas if r.zone == zone]
            zone_statuses.append(
                ZoneStatus(
                    name=zone,
                    state=state,
                    replicas=sum(1 for r in mine if r.pod is not None),
                    ready_replicas=sum(1 for r in mine if r.pod is not None and r.pod.ready),
                    voters=sum(1 for r in mine if r.is_voter),
                    extra_replicas=max(0, zone_replicas[zone] - spec.replicas_per_zone),
                    unhealthy_since=since,
                )
            )
            prev_zone = self.prev.zone(zone)
            prev_state = prev_zone.state if prev_zone else ZoneState.HEALTHY
            if state is not prev_state and self.bootstrapped:
                if state is ZoneState.FAILED:
                    events.append(
                        Event(
                            "Warning",
                            "ZoneFailed",
                            f"zone {zone} unreachable for {self.timeout}s; failing over",
                        )
                    )
                elif state is ZoneState.DOWN:
                    events.append(
                        Event("Warning", "ZoneDown", f"zone {zone} has no healthy replica")
                    )
                elif state is ZoneState.HEALTHY and prev_state in (
                    ZoneState.DOWN,
                    ZoneState.FAILED,
                ):
                    events.append(Event("Normal", "ZoneRecovered", f"zone {zone} is healthy again"))

        voters = [r for r in replicas if r.is_voter]
        healthy_voters = [r for r in voters if r.healthy]
        quorum_ok = self.leader is not None and len(healthy_voters) >= len(voters) // 2 + 1
        all_ready = all(r.pod is not None and r.pod.ready for r in replicas if not r.retiring)
        unhealthy = [r.id for r in replicas if not r.healthy and not r.retiring]
        bad_zones = [z for z, (s, _) in zones.items() if s is not ZoneState.HEALTHY]
        sts_changes = [
            z
            for z, n in zone_replicas.items()
            if (sts := self.obs.statefulsets.get(z)) is None or sts.replicas != n
        ]
        conditions = self.prev.conditions

        def cond(kind: ConditionType, value: bool | None, reason: str, message: str) -> None:
            nonlocal conditions
            before = self.prev.condition(kind)
            conditions = set_condition(conditions, kind, value, reason, message, now, gen)
            if kind is ConditionType.QUORUM_AVAILABLE and before and before.status and not value:
                events.append(Event("Warning", "QuorumLost", message))

        if self.leader is None:
            cond(
                ConditionType.QUORUM_AVAILABLE,
                False if self.bootstrapped else None,
                "NoLeader" if self.bootstrapped else "Bootstrapping",
                "no replica reports itself leader",
            )
        else:
            cond(
                ConditionType.QUORUM_AVAILABLE,
                quorum_ok,
                "QuorumHealthy" if quorum_ok else "QuorumAtRisk",
                f"{len(healthy_voters)}/{len(voters)} voters healthy; leader {self.leader}",
            )
        cond(
            ConditionType.AVAILABLE,
            quorum_ok,
            "LeaderElected"
            if quorum_ok
            else ("NoLeader" if self.bootstrapped else "Bootstrapping"),
            f"leader {self.leader}" if quorum_ok else "writes cannot commit",
        )
        if bad_zones:
            worst = (
                "ZoneFailed"
                if failed_zones
                else (
                    "ZoneDown"
                    if any(zones[z][0] is ZoneState.DOWN for z in bad_zones)
                    else "ReplicasUnhealthy"
                )
            )
            cond(
                ConditionType.ZONE_DEGRADED,
                True,
                worst,
                "; ".join(f"{z}: {zones[z][0].value}" for z in bad_zones),
            )
        else:
            cond(
                ConditionType.ZONE_DEGRADED,
                False,
                "AllZonesHealthy",
                "every zone has all replicas healthy",
            )
        degraded = bool(unhealthy or bad_zones or len(healthy_voters) < spec.voters)
        cond(
            ConditionType.DEGRADED,
            degraded,
            "ReplicasUnhealthy"
            if unhealthy
            else ("VotersMissing" if degraded else "AllReplicasHealthy"),
            f"unhealthy: {', '.join(unhealthy)}"
            if unhealthy
            else f"{len(healthy_voters)}/{spec.voters} voters healthy",
        )
        if member_actions:
            first = member_actions[0]
            reason = "FailingOver" if failed_zones else "MembershipChanging"
            message = f"{first.kind.value} {first.member}: {first.reason}"
        elif forced := [a for a in pod_actions if a.kind is PodActionKind.FORCE_DELETE]:
            reason, message = "ForceDeletingPods", "; ".join(a.reason for a in forced)
        elif any(a.kind is PodActionKind.DELETE_FOR_UPDATE for a in pod_actions):
            reason, message = "RollingUpdate", "restarting out-of-date pods one at a time"
        elif sts_changes:
            reason, message = "Scaling", f"resizing zones {', '.join(sts_changes)}"
        elif not self.bootstrapped:
            reason, message = "Bootstrapping", "waiting for the initial members to elect a leader"
        elif not all_ready:
            reason, message = "PodsNotReady", "waiting for pods to become ready"
        else:
            reason, message = "Reconciled", "spec and cluster agree"
        progressing = reason != "Reconciled"
        cond(ConditionType.PROGRESSING, progressing, reason, message)
        auth_usable, auth_reason, auth_message = client_auth_usability(spec)
        was_usable = self.prev.condition(ConditionType.CLIENT_AUTH_USABLE)
        cond(ConditionType.CLIENT_AUTH_USABLE, auth_usable, auth_reason, auth_message)
        if not auth_usable and (was_usable is None or was_usable.status is not False):
            events.append(Event("Warning", auth_reason, auth_message))
        ready = quorum_ok and not degraded and not progressing
        cond(
            ConditionType.READY,
            ready,
            "Ready"
            if ready
            else ("Unavailable" if not quorum_ok else reason if progressing else "Degraded"),
            "all replicas healthy and in place"
            if ready
            else message
            if progressing
            else "see Degraded",
        )
        if not any(r.pod for r in replicas) and not self.bootstrapped:
            phase = Phase.PENDING
        elif not self.bootstrapped:
            phase = Phase.BOOTSTRAPPING
        elif not quorum_ok:
            phase = Phase.UNAVAILABLE
        elif failed_zones and member_actions:
            phase = Phase.FAILING_OVER
        elif degraded:
            phase = Phase.DEGRADED
        else:
            phase = Phase.RUNNING
        ready_pods = sum(1 for r in replicas if r.pod is not None and r.pod.ready)
        per_zone_ready = [zs.ready_replicas for zs in zone_statuses]
        client = f"{meta.client_service_name(ref)}.{ref.namespace}.svc:{spec.ports.client}"
        status = DatastoreStatus(
            observed_generation=gen,
            phase=phase,
            leader=self.leader,
            term=self.leader_status.term if self.leader_status else self.prev.term,
            bootstrapped=self.bootstrapped,
            selector=meta.selector_string(ref),
            replicas_per_zone=min(per_zone_ready, default=0),
            ready_replicas=ready_pods,
            summary_replicas=f"{ready_pods}/{sum(zone_replicas.values())}",
            summary_zones=f"{sum(1 for z in zone_statuses if z.state is ZoneState.HEALTHY)}/{len(spec.zones)}",
            conditions=conditions,
            members=tuple(members),
            zones=tuple(zone_statuses),
            endpoints=Endpoints(
                client=client,
                leader=f"{meta.leader_service_name(ref)}.{ref.namespace}.svc:{spec.ports.client}",
                readonly=f"{meta.readonly_service_name(ref)}.{ref.namespace}.svc:{spec.ports.client}",
                peers=f"{meta.peers_service_name(ref)}.{ref.namespace}.svc:{spec.ports.peer}",
            ),
            automatic_replacements=sum(z.extra_replicas for z in zone_statuses),
        )
        return status, events


def client_auth_usability(spec: DatastoreSpec) -> tuple[bool, str, str]:
    """(usable, reason, message) of the spec's client authentication for the official
    clients. Tokens without client TLS is a valid spec (a custom client may send the
    header over plaintext) but no official client can use it: through
    DATASTORE_EMULATOR_HOST they send no credentials, and otherwise only over TLS."""
    security = spec.security
    if not security.client_auth.enabled:
        return True, "NoClientAuth", "clients need no credentials (clientAuth.mode None)"
    if security.client_tls.enabled:
        return True, "TokensOverTLS", "clients send a bearer token over TLS"
    return (
        False,
        "TokensWithoutTLS",
        "clientAuth.mode is Tokens but clientTLS is off: the official Datastore clients send "
        "credentials only over TLS, so none of them can authenticate. Enable "
        "spec.security.clientTLS, or set spec.security.clientAuth.mode: None for clients "
        "that use DATASTORE_EMULATOR_HOST.",
    )


def plan(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    previous: DatastoreStatus,
    observation: Observation,
    now: datetime,
    entropy: Entropy = secrets.token_bytes,
) -> Plan:
    """Decide one reconcile pass. Pure: same inputs (entropy included), same Plan."""
    return _Planner(ref, spec, previous, observation, now, entropy).run()
