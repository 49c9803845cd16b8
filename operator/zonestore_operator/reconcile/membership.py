"""Steps 3-4 of a planning pass (see reconcile.plan): the desired voter set and the
membership actions that move the group towards it (add learner, promote, transfer
leadership, remove), in the order they are executed. Pure."""

from __future__ import annotations

from collections.abc import Iterable

from zonestore_operator.model.spec import UpdateStrategy
from zonestore_operator.reconcile.actions import ActionKind, MemberAction
from zonestore_operator.reconcile.replicas import Replica, View, zone_rank
from zonestore_operator.resources import meta


def desired_voters(view: View, replicas: list[Replica], failed_zones: set[str]) -> list[Replica]:
    def unusable(r: Replica) -> bool:
        return r.failed or r.retiring or r.zone in failed_zones

    voters = [r for r in replicas if r.is_voter]
    chosen = [r for r in voters if not unusable(r)]
    candidates = [r for r in replicas if r.is_learner and not unusable(r) and view.caught_up(r)]
    count: dict[str, int] = {}

    def recount() -> None:
        count.clear()
        for r in chosen:
            count[r.zone] = count.get(r.zone, 0) + 1

    def droppable(zone: str) -> Replica | None:
        pool = [r for r in chosen if r.zone == zone and r.id != view.leader]
        # Drop the unhealthy first, then the highest ordinal.
        return max(pool, key=lambda r: (not r.healthy, r.ordinal), default=None)

    def take(zone_filter: Iterable[str] | None = None) -> Replica | None:
        pool = [c for c in candidates if zone_filter is None or c.zone in zone_filter]
        best = min(
            pool,
            key=lambda c: (count.get(c.zone, 0), zone_rank(view.spec, c.zone), c.ordinal),
            default=None,
        )
        if best is not None:
            candidates.remove(best)
        return best

    recount()
    while len(chosen) > view.spec.voters:
        zone = max(count, key=lambda z: (count[z], zone_rank(view.spec, z)))
        victim = droppable(zone) or next(r for r in chosen if r.id != view.leader)
        chosen.remove(victim)
        recount()
    while len(chosen) < view.spec.voters and (added := take()) is not None:
        chosen.append(added)
        recount()
    # Rebalance: move a vote from the fullest zone to the emptiest zone that has a
    # caught-up learner, while they differ by more than one.
    while candidates:
        zmin = min(
            {c.zone for c in candidates},
            key=lambda z: (count.get(z, 0), zone_rank(view.spec, z)),
        )
        zmax = max(count, key=lambda z: (count[z], -zone_rank(view.spec, z)), default=None)
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
        if len(chosen) >= view.spec.voters:
            break
        chosen.append(r)
    return chosen


def member_actions(
    view: View, replicas: list[Replica], desired: list[Replica], failed_zones: set[str]
) -> list[MemberAction]:
    if view.leader_status is None:
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
                    meta.peer_address(view.ref, view.spec, r.id),
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
        actions.append(MemberAction(ActionKind.PROMOTE, r.id, r.zone, reason=f"caught up; {why}"))
    leader = by_id.get(view.leader or "")
    if not promotions and leader is not None:
        target = transfer_target(view, leader, voters, desired_ids, failed_zones)
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
            (v for v in voters if v.id not in desired_ids and v.id != view.leader),
            key=lambda v: (not (v.failed or v.zone in failed_zones), v.healthy),
        )
        if removable and len(voters) - 1 >= view.spec.voters:
            v = removable[0]
            why = "failed" if v.failed or v.zone in failed_zones else "voters rebalanced"
            actions.append(MemberAction(ActionKind.REMOVE_MEMBER, v.id, v.zone, reason=why))
    for r in replicas:
        gone = r.failed or r.retiring or r.zone not in view.spec.zones
        if r.is_learner and r.id not in desired_ids and gone:
            why = "retired" if r.retiring else "failed"
            actions.append(MemberAction(ActionKind.REMOVE_MEMBER, r.id, r.zone, reason=why))
    return actions


def transfer_target(
    view: View,
    leader: Replica,
    voters: list[Replica],
    desired_ids: set[str],
    failed_zones: set[str],
) -> Replica | None:
    preferred = view.spec.preferred_leader_zone
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
        and view.caught_up(v)
    ]
    if must_move:
        # Prefer the preferred zone, then a zone other than the leader's.
        return min(
            options,
            key=lambda v: (
                v.zone != preferred,
                v.zone == leader.zone,
                v.info.lag if v.info and v.info.lag is not None else 0,
                zone_rank(view.spec, v.zone),
                v.ordinal,
            ),
            default=None,
        )
    if preferred and leader.zone != preferred:
        in_zone = [v for v in options if v.zone == preferred]
        return min(in_zone, key=lambda v: v.ordinal, default=None)
    return None


def leader_update_transfer(
    view: View, replicas: list[Replica], desired_ids: set[str]
) -> MemberAction | None:
    """When only the leader is out of date, move leadership to an updated voter."""
    if view.spec.update_strategy is not UpdateStrategy.ROLLING_UPDATE or view.leader is None:
        return None

    def outdated(r: Replica) -> bool:
        sts = view.obs.statefulsets.get(r.zone)
        return bool(
            r.pod
            and sts
            and sts.update_revision
            and r.pod.revision
            and r.pod.revision != sts.update_revision
        )

    stale = [r for r in replicas if outdated(r)]
    if [r.id for r in stale] != [view.leader]:
        return None
    options = [
        r
        for r in replicas
        if r.is_voter and r.id != view.leader and r.id in desired_ids and view.caught_up(r)
    ]
    target = min(options, key=lambda r: (zone_rank(view.spec, r.zone), r.ordinal), default=None)
    if target is None:
        return None
    return MemberAction(
        ActionKind.TRANSFER_LEADER,
        target.id,
        target.zone,
        reason="leader restarts last for the update",
    )
