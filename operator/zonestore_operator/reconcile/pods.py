"""Steps 5-6 of a planning pass (see reconcile.plan): replicas per zone (a StatefulSet
never shrinks below a voter) and pod actions (role labels, one rolling-update deletion
at a time, force deletion of a pod stuck on a dead node). Pure."""

from __future__ import annotations

from collections.abc import Mapping

from zonestore_operator.model.spec import UpdateStrategy
from zonestore_operator.reconcile.actions import MemberAction, PodAction, PodActionKind
from zonestore_operator.reconcile.replicas import Replica, View, expired
from zonestore_operator.resources import meta


def zone_replicas(
    view: View, targets: Mapping[str, int], replicas: list[Replica]
) -> dict[str, int]:
    """A zone's StatefulSet never shrinks below a pod that still holds a vote."""
    out = {}
    for zone, target in targets.items():
        voting = [r.ordinal + 1 for r in replicas if r.zone == zone and r.is_voter]
        out[zone] = max([target, *voting])
    return out


def pod_actions(
    view: View,
    replicas: list[Replica],
    member_actions: list[MemberAction],
    calm: bool,
    zone_replicas: Mapping[str, int],
) -> list[PodAction]:
    actions = []
    if view.leader_status is not None:
        for r in replicas:
            if r.pod is None or r.pod.deleting or r.ordinal >= zone_replicas.get(r.zone, 0):
                continue  # gone, going, or about to be scaled away
            if r.id == view.leader:
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
        reason = stuck_on_dead_node(view, r, replicas)
        if reason and r.pod is not None:
            actions.append(
                PodAction(PodActionKind.FORCE_DELETE, r.id, uid=r.pod.uid, reason=reason)
            )
    if view.spec.update_strategy is UpdateStrategy.ROLLING_UPDATE and calm and not member_actions:
        outdated = [
            r
            for r in replicas
            if r.pod is not None
            and (sts := view.obs.statefulsets.get(r.zone)) is not None
            and sts.update_revision
            and r.pod.revision
            and r.pod.revision != sts.update_revision
        ]
        order = sorted(outdated, key=lambda r: (r.id == view.leader, r.is_voter, r.zone, r.ordinal))
        if order and order[0].id != view.leader:
            actions.append(PodAction(PodActionKind.DELETE_FOR_UPDATE, order[0].id))
    return actions


def stuck_on_dead_node(view: View, r: Replica, replicas: list[Replica]) -> str | None:
    """Why `r`'s pod should be force-deleted, or None. The clock is the one the
    planner already keeps (the member's unhealthySince: a Terminating pod is not
    running, a NotReady node not healthy), checked against the node's own record of
    when it went NotReady, so an older, unrelated unhealthiness cannot shorten the
    wait for a node that only just died."""
    pod = r.pod
    if pod is None or not pod.deleting or not pod.uid or not pod.node_name:
        return None
    if not view.spec.failover.enabled or view.leader is None:
        return None
    if view.obs.node_ready.get(pod.node_name, True):
        return None  # Ready, or no Node object (the pod GC controller handles that)
    node_since = view.obs.node_not_ready_since.get(pod.node_name)
    if not expired(r.unhealthy_since, view.now, view.timeout):
        return None
    if node_since is not None and not expired(node_since, view.now, view.timeout):
        return None
    voters = [v for v in replicas if v.is_voter]
    others = [v for v in voters if v.id != r.id and v.healthy]
    if len(others) < len(voters) // 2 + 1:
        return None  # the group needs this member back, not a second incarnation
    return (
        f"force-deleting {r.id}: Terminating on NotReady node {pod.node_name} "
        f"for over {view.timeout}s"
    )
