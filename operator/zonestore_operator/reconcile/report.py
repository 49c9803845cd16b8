"""Step 7 of a planning pass (see reconcile.plan): the new DatastoreStatus (members,
zones, conditions with lastTransitionTime moving only on a flip, phase, endpoints) and
the Events for zone and quorum transitions. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from zonestore_operator.model.node import Membership, RaftRole
from zonestore_operator.model.spec import DatastoreSpec
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
from zonestore_operator.reconcile.actions import Event, MemberAction, PodAction, PodActionKind
from zonestore_operator.reconcile.replicas import Replica, View
from zonestore_operator.resources import meta


def status(
    view: View,
    replicas: list[Replica],
    zones: Mapping[str, tuple[ZoneState, datetime | None]],
    zone_replicas: Mapping[str, int],
    member_actions: list[MemberAction],
    pod_actions: list[PodAction],
    failed_zones: set[str],
) -> tuple[DatastoreStatus, list[Event]]:
    spec, ref, gen, now = view.spec, view.ref, view.ref.generation, view.now
    events: list[Event] = []
    members = []
    for r in replicas:
        own = r.status
        if r.id == view.leader:
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
        prev = view.prev.member(r.id)
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
        prev_zone = view.prev.zone(zone)
        prev_state = prev_zone.state if prev_zone else ZoneState.HEALTHY
        if state is not prev_state and view.bootstrapped:
            if state is ZoneState.FAILED:
                events.append(
                    Event(
                        "Warning",
                        "ZoneFailed",
                        f"zone {zone} unreachable for {view.timeout}s; failing over",
                    )
                )
            elif state is ZoneState.DOWN:
                events.append(Event("Warning", "ZoneDown", f"zone {zone} has no healthy replica"))
            elif state is ZoneState.HEALTHY and prev_state in (
                ZoneState.DOWN,
                ZoneState.FAILED,
            ):
                events.append(Event("Normal", "ZoneRecovered", f"zone {zone} is healthy again"))

    voters = [r for r in replicas if r.is_voter]
    healthy_voters = [r for r in voters if r.healthy]
    quorum_ok = view.leader is not None and len(healthy_voters) >= len(voters) // 2 + 1
    all_ready = all(r.pod is not None and r.pod.ready for r in replicas if not r.retiring)
    unhealthy = [r.id for r in replicas if not r.healthy and not r.retiring]
    bad_zones = [z for z, (s, _) in zones.items() if s is not ZoneState.HEALTHY]
    sts_changes = [
        z
        for z, n in zone_replicas.items()
        if (sts := view.obs.statefulsets.get(z)) is None or sts.replicas != n
    ]
    conditions = view.prev.conditions

    def cond(kind: ConditionType, value: bool | None, reason: str, message: str) -> None:
        nonlocal conditions
        before = view.prev.condition(kind)
        conditions = set_condition(conditions, kind, value, reason, message, now, gen)
        if kind is ConditionType.QUORUM_AVAILABLE and before and before.status and not value:
            events.append(Event("Warning", "QuorumLost", message))

    if view.leader is None:
        cond(
            ConditionType.QUORUM_AVAILABLE,
            False if view.bootstrapped else None,
            "NoLeader" if view.bootstrapped else "Bootstrapping",
            "no replica reports itself leader",
        )
    else:
        cond(
            ConditionType.QUORUM_AVAILABLE,
            quorum_ok,
            "QuorumHealthy" if quorum_ok else "QuorumAtRisk",
            f"{len(healthy_voters)}/{len(voters)} voters healthy; leader {view.leader}",
        )
    cond(
        ConditionType.AVAILABLE,
        quorum_ok,
        "LeaderElected" if quorum_ok else ("NoLeader" if view.bootstrapped else "Bootstrapping"),
        f"leader {view.leader}" if quorum_ok else "writes cannot commit",
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
    elif not view.bootstrapped:
        reason, message = "Bootstrapping", "waiting for the initial members to elect a leader"
    elif not all_ready:
        reason, message = "PodsNotReady", "waiting for pods to become ready"
    else:
        reason, message = "Reconciled", "spec and cluster agree"
    progressing = reason != "Reconciled"
    cond(ConditionType.PROGRESSING, progressing, reason, message)
    auth_usable, auth_reason, auth_message = client_auth_usability(spec)
    was_usable = view.prev.condition(ConditionType.CLIENT_AUTH_USABLE)
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
    if not any(r.pod for r in replicas) and not view.bootstrapped:
        phase = Phase.PENDING
    elif not view.bootstrapped:
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
        leader=view.leader,
        term=view.leader_status.term if view.leader_status else view.prev.term,
        bootstrapped=view.bootstrapped,
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
