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

Where each step lives: steps 1-2 in reconcile.replicas (View, Replica), 3-4 in
reconcile.membership, 5-6 in reconcile.pods, 7 in reconcile.report; the values a pass
returns in reconcile.actions. This module runs the pass in that order.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import datetime

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.model.status import DatastoreStatus, ZoneState
from zonestore_operator.reconcile import credentials, membership, pods, report
from zonestore_operator.reconcile.actions import (
    ActionKind,
    Event,
    MemberAction,
    Plan,
    PodAction,
    PodActionKind,
)
from zonestore_operator.reconcile.observation import Observation
from zonestore_operator.reconcile.replicas import View, zone_rank
from zonestore_operator.reconcile.report import client_auth_usability
from zonestore_operator.resources.certs import Entropy
from zonestore_operator.resources.desired import desired_objects

__all__ = [
    "ActionKind",
    "Event",
    "MemberAction",
    "Plan",
    "PodAction",
    "PodActionKind",
    "client_auth_usability",
    "plan",
]


def _run(view: View) -> Plan:
    targets = view.targets()
    replicas = view.replicas(targets)
    zones = view.zone_states(replicas)
    all_healthy = all(state is ZoneState.HEALTHY for state, _ in zones.values()) and not any(
        r.failed or not r.healthy for r in replicas if not r.retiring
    )
    # Step 5: release one replacement per zone once everything is healthy again.
    if all_healthy:
        for zone, target in targets.items():
            if target > view.spec.replicas_per_zone:
                targets[zone] = target - 1
        replicas = view.replicas(targets)
    failed_zones = (
        {z for z, (s, _) in zones.items() if s is ZoneState.FAILED}
        if view.spec.failover.enabled
        else set()
    )
    voters = [r for r in replicas if r.is_voter]
    # A recovered group starts with one voter (spec.bootstrap.recovery): it fills up to
    # spec.voters from caught-up learners even where failover is off.
    filling = view.spec.recovery is not None and len(voters) < view.spec.voters
    if view.leader_status is not None and (view.spec.failover.enabled or filling):
        desired = membership.desired_voters(view, replicas, failed_zones)
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
        and (r.info is None or not view.caught_up(r))
    ]
    extra_total = sum(t - view.spec.replicas_per_zone for t in targets.values())
    events: list[Event] = []
    if (
        kept_failed
        and len(pending) < len(kept_failed)
        and extra_total < view.spec.failover.max_automatic_replacements
        and view.leader_status is not None
    ):
        healthy_zones = [z for z in view.spec.zones if z not in failed_zones]
        if healthy_zones:
            zone = min(
                healthy_zones,
                key=lambda z: (targets[z], zone_rank(view.spec, z)),
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
    member_actions = membership.member_actions(view, replicas, desired, failed_zones)
    desired_ids = {r.id for r in desired}
    if not member_actions and all_healthy:
        update_transfer = membership.leader_update_transfer(view, replicas, desired_ids)
        if update_transfer is not None:
            member_actions.append(update_transfer)
    zone_replicas = pods.zone_replicas(view, targets, replicas)
    calm = all_healthy and all(
        r.pod is not None and r.pod.ready and not r.pod.deleting for r in replicas if not r.retiring
    )
    pod_actions = pods.pod_actions(view, replicas, member_actions, calm, zone_replicas)
    status, status_events = report.status(
        view, replicas, zones, zone_replicas, member_actions, pod_actions, failed_zones
    )
    creds = credentials.plan_credentials(
        view.ref, view.spec, view.obs.secrets, view.prev.certificates, view.now, view.entropy
    )
    status = replace(status, certificates=creds.certificates)
    events += [Event(n.type, n.reason, n.message) for n in creds.notices]
    objects = [dict(o) for o in creds.objects] + desired_objects(
        view.ref, view.spec, zone_replicas, status.bootstrapped, view.obs.operator_namespace
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


def plan(
    ref: DatastoreRef,
    spec: DatastoreSpec,
    previous: DatastoreStatus,
    observation: Observation,
    now: datetime,
    entropy: Entropy = secrets.token_bytes,
) -> Plan:
    """Decide one reconcile pass. Pure: same inputs (entropy included), same Plan."""
    return _run(View(ref, spec, previous, observation, now, entropy))
