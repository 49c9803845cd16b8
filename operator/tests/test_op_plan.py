"""The planner, scenario by scenario: healthy, zone down within and beyond the timeout,
replacements, the zone's return, leadership placement, rolling updates, bootstrap, and
the fixpoint (planning again after the plan took effect changes nothing)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from simcluster import REF, T0, SimCluster

from zonestore_operator.model.spec import parse_spec
from zonestore_operator.model.status import (
    ConditionType,
    DatastoreStatus,
    Phase,
    ZoneState,
)
from zonestore_operator.reconcile import plan as planner
from zonestore_operator.reconcile.observation import Observation, PodObservation

THREE_BY_TWO = parse_spec({"zones": ["a", "b", "c"], "replicasPerZone": 2, "voters": 3})
THREE_BY_ONE = parse_spec({"zones": ["a", "b", "c"], "replicasPerZone": 1, "voters": 3})
TIMEOUT = timedelta(seconds=60)


def _settled(sim: SimCluster) -> DatastoreStatus:
    status = sim.converge(DatastoreStatus(), T0)
    sim.log.clear()
    return status


def _cond(status: DatastoreStatus, kind: ConditionType) -> tuple[bool | None, str]:
    c = status.condition(kind)
    assert c is not None, kind
    return c.status, c.reason


def _voters(sim: SimCluster) -> list[str]:
    return sorted(n for n, m in sim.members.items() if m.membership.value == "voter")


@pytest.mark.parametrize("spec", [THREE_BY_ONE, THREE_BY_TWO], ids=["3x1", "3x2"])
def test_healthy_cluster_plans_no_actions_and_is_ready(spec) -> None:
    sim = SimCluster.healthy(spec)
    p = planner.plan(REF, spec, DatastoreStatus(), sim.observation(), T0)
    assert p.member_actions == ()
    assert p.pod_actions == ()
    assert p.status.phase is Phase.RUNNING
    assert _cond(p.status, ConditionType.READY) == (True, "Ready")
    assert _cond(p.status, ConditionType.QUORUM_AVAILABLE) == (True, "QuorumHealthy")
    assert _cond(p.status, ConditionType.ZONE_DEGRADED) == (False, "AllZonesHealthy")
    assert p.status.leader == "ds-a-0"
    assert p.status.summary_zones == "3/3"
    assert all(c.observed_generation == 1 for c in p.status.conditions)


def test_plan_of_the_planned_result_is_a_fixpoint() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    first = planner.plan(REF, THREE_BY_TWO, DatastoreStatus(), sim.observation(), T0)
    sim.apply(first)
    later = T0 + timedelta(seconds=30)
    second = planner.plan(REF, THREE_BY_TWO, first.status, sim.observation(), later)
    assert (second.member_actions, second.pod_actions) == ((), ())
    assert second.objects == first.objects
    assert second.status.conditions == first.status.conditions  # no transition moved


def test_zone_down_within_the_timeout_only_reports_degraded() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.dead_zones.add("c")
    p, status = sim.step(status, T0 + timedelta(seconds=10))
    p, status = sim.step(status, T0 + timedelta(seconds=10) + TIMEOUT - timedelta(seconds=1))
    assert p.member_actions == ()
    assert status.zone("c").state is ZoneState.DOWN
    assert _cond(status, ConditionType.ZONE_DEGRADED) == (True, "ZoneDown")
    assert _cond(status, ConditionType.DEGRADED)[0] is True
    assert _cond(status, ConditionType.QUORUM_AVAILABLE)[0] is True
    assert _cond(status, ConditionType.READY)[0] is False
    assert status.phase is Phase.DEGRADED
    assert sim.log == []


def test_zone_down_beyond_the_timeout_promotes_then_removes() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0 + timedelta(seconds=10))
    assert any(e.reason == "ZoneDown" for e in _.events)
    failed_at = T0 + timedelta(seconds=10) + TIMEOUT
    p, status = sim.step(status, failed_at)
    assert [e.reason for e in p.events if e.reason == "ZoneFailed"] == ["ZoneFailed"]
    assert status.zone("c").state is ZoneState.FAILED
    assert _cond(status, ConditionType.ZONE_DEGRADED) == (True, "ZoneFailed")
    assert _cond(status, ConditionType.PROGRESSING) == (True, "FailingOver")
    assert status.phase is Phase.FAILING_OVER
    sim.converge(status, failed_at)
    # Promote first (never fewer than 3 voters), then drop the dead voter and learner.
    assert sim.log == [
        ("Promote", "ds-a-1"),
        ("RemoveMember", "ds-c-0"),
        ("RemoveMember", "ds-c-1"),
    ]
    assert _voters(sim) == ["ds-a-0", "ds-a-1", "ds-b-0"]


def test_leader_in_a_failed_zone_hands_over_before_it_is_removed() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.leader = "ds-c-0"  # its nodes go NotReady but the process still answers
    sim.label_roles()
    sim.not_ready_zones.add("c")
    _, status = sim.step(status, T0)
    sim.converge(status, T0 + TIMEOUT)
    assert sim.log == [
        ("Promote", "ds-a-1"),
        ("TransferLeader", "ds-a-0"),
        ("RemoveMember", "ds-c-0"),
        ("RemoveMember", "ds-c-1"),
    ]
    assert sim.leader == "ds-a-0"


def test_failed_zone_without_learners_gets_a_bounded_replacement() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    p, status = sim.step(status, T0 + TIMEOUT)
    assert p.zone_replicas == {"a": 2, "b": 1, "c": 1}
    assert [e.reason for e in p.events if e.reason == "ReplacementAdded"] == ["ReplacementAdded"]
    status = sim.converge(status, T0 + TIMEOUT)
    assert sim.log == [("AddLearner", "ds-a-1"), ("Promote", "ds-a-1"), ("RemoveMember", "ds-c-0")]
    assert status.automatic_replacements == 1
    assert status.zone("a").extra_replicas == 1
    # Still bounded: another failure gets no second replacement.
    sim.dead_zones.add("b")
    p = planner.plan(REF, THREE_BY_ONE, status, sim.observation(), T0 + 3 * TIMEOUT)
    assert sum(p.zone_replicas.values()) == 4


def test_replacement_waits_for_catch_up_before_promotion() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    for i in range(5):  # learners never catch up
        _, status = sim.step(status, T0 + TIMEOUT + timedelta(seconds=i))
    assert sim.log == [("AddLearner", "ds-a-1")]
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]


def test_no_replacement_allowed_keeps_the_failed_voter() -> None:
    spec = parse_spec(
        {"zones": ["a", "b", "c"], "voters": 3, "failover": {"maxAutomaticReplacements": 0}}
    )
    sim = SimCluster.healthy(spec)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    status = sim.converge(status, T0 + TIMEOUT)
    assert sim.log == []
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]
    assert status.zone("c").state is ZoneState.FAILED


def test_failover_disabled_reports_but_changes_nothing() -> None:
    spec = parse_spec(
        {"zones": ["a", "b", "c"], "replicasPerZone": 2, "failover": {"enabled": False}}
    )
    sim = SimCluster.healthy(spec)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    status = sim.converge(status, T0 + 2 * TIMEOUT)
    assert sim.log == []
    assert status.zone("c").state is ZoneState.FAILED


def test_returning_zone_rejoins_as_learner_then_takes_its_vote_back() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    status = sim.converge(status, T0 + TIMEOUT)
    sim.log.clear()
    sim.dead_zones.clear()
    back = T0 + 5 * TIMEOUT
    # The returning replica is added as a learner and not promoted while it lags.
    p, status = sim.step(status, back)
    assert sim.log == [("AddLearner", "ds-c-0")]
    p, status = sim.step(status, back + timedelta(seconds=1))
    assert all(a.kind is not planner.ActionKind.PROMOTE for a in p.member_actions)
    sim.catch_up()
    status = sim.converge(status, back + timedelta(seconds=2))
    assert sim.log == [
        ("AddLearner", "ds-c-0"),
        ("Promote", "ds-c-0"),
        ("RemoveMember", "ds-a-1"),
    ]
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]
    assert sim.sts == {"a": 1, "b": 1, "c": 1}
    assert status.automatic_replacements == 0
    assert status.phase is Phase.RUNNING
    assert _cond(status, ConditionType.READY) == (True, "Ready")


def test_returning_zone_with_learners_rebalances_voters_across_zones() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.dead_zones.add("c")
    _, status = sim.step(status, T0)
    status = sim.converge(status, T0 + TIMEOUT)
    assert _voters(sim) == ["ds-a-0", "ds-a-1", "ds-b-0"]
    sim.log.clear()
    sim.dead_zones.clear()
    status = sim.converge(status, T0 + 5 * TIMEOUT)
    assert sim.log[:3] == [
        ("AddLearner", "ds-c-0"),
        ("AddLearner", "ds-c-1"),
        ("Promote", "ds-c-0"),
    ]
    assert ("RemoveMember", "ds-a-1") in sim.log
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]
    # The demoted voter comes back as a learner: every pod is a member again.
    assert sorted(sim.members) == sorted(sim.pods)


def test_preferred_leader_zone_gets_leadership() -> None:
    spec = parse_spec({"zones": ["a", "b", "c"], "preferredLeaderZone": "c"})
    sim = SimCluster.healthy(spec)
    sim.converge(DatastoreStatus(), T0)
    assert sim.log == [("TransferLeader", "ds-c-0")]
    assert sim.leader == "ds-c-0"


def test_role_labels_follow_the_observed_roles() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    sim.pods["ds-a-0"].role_label = None
    sim.pods["ds-c-1"].role_label = "follower"
    p = planner.plan(REF, THREE_BY_TWO, DatastoreStatus(), sim.observation(), T0)
    assert set(p.pod_actions) == {
        planner.PodAction(planner.PodActionKind.SET_ROLE_LABEL, "ds-a-0", "leader"),
        planner.PodAction(planner.PodActionKind.SET_ROLE_LABEL, "ds-c-1", "learner"),
    }


def test_rolling_update_restarts_learners_then_followers_then_the_leader() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.update_revision = "r2"
    sim.converge(status, T0 + timedelta(minutes=1))
    assert sim.log == [
        ("Restart", "ds-a-1"),
        ("Restart", "ds-b-1"),
        ("Restart", "ds-c-1"),
        ("Restart", "ds-b-0"),
        ("Restart", "ds-c-0"),
        ("TransferLeader", "ds-b-0"),
        ("Restart", "ds-a-0"),
    ]


def test_rolling_update_waits_while_a_zone_is_down() -> None:
    sim = SimCluster.healthy(THREE_BY_TWO)
    status = _settled(sim)
    sim.update_revision = "r2"
    sim.dead_zones.add("c")
    p = planner.plan(REF, THREE_BY_TWO, status, sim.observation(), T0)
    assert not [a for a in p.pod_actions if a.kind is planner.PodActionKind.DELETE_FOR_UPDATE]


def test_no_reachable_leader_plans_no_membership_change() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    sim.dead_zones.update({"b", "c"})
    p = planner.plan(REF, THREE_BY_ONE, status, sim.observation(), T0 + 10 * TIMEOUT)
    assert p.member_actions == ()
    assert _cond(p.status, ConditionType.QUORUM_AVAILABLE) == (False, "NoLeader")
    assert _cond(p.status, ConditionType.AVAILABLE)[0] is False
    assert p.status.phase is Phase.UNAVAILABLE
    assert [e.reason for e in p.events if e.reason == "QuorumLost"] == ["QuorumLost"]


def test_bootstrap_reports_progress_and_flips_cluster_state_once_a_leader_appears() -> None:
    pods = {
        f"ds-{z}-0": PodObservation(f"ds-{z}-0", z, 0, phase="Pending", ready=False) for z in "abc"
    }
    p = planner.plan(REF, THREE_BY_ONE, DatastoreStatus(), Observation(pods=pods), T0)
    assert p.status.phase is Phase.BOOTSTRAPPING
    assert _cond(p.status, ConditionType.PROGRESSING)[0] is True
    # No zone alarms before the group exists; only the credentials are announced (no
    # client tokens: clientAuth defaults to None).
    assert [e.reason for e in p.events] == ["CAIssued", "CertificateIssued"]
    cm = next(o for o in p.objects if o["kind"] == "ConfigMap")
    assert cm["data"]["cluster-state"] == "new"
    sim = SimCluster.healthy(THREE_BY_ONE)
    later = planner.plan(REF, THREE_BY_ONE, p.status, sim.observation(), T0 + 10 * TIMEOUT)
    assert later.status.bootstrapped is True
    assert later.member_actions == ()  # slow bootstrap is not a failure
    cm = next(o for o in later.objects if o["kind"] == "ConfigMap")
    assert cm["data"]["cluster-state"] == "existing"


def test_scaling_out_adds_learners_and_more_voters_when_asked() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    bigger = parse_spec({"zones": ["a", "b", "c"], "replicasPerZone": 2, "voters": 5})
    sim.spec = bigger
    plan_ = planner.plan(REF, bigger, status, sim.observation(), T0)
    assert plan_.zone_replicas == {"a": 2, "b": 2, "c": 2}
    sim.converge(status, T0)
    assert _voters(sim) == ["ds-a-0", "ds-a-1", "ds-b-0", "ds-b-1", "ds-c-0"]


def test_scaling_in_moves_votes_off_retiring_pods_before_they_go() -> None:
    sim = SimCluster.healthy(
        parse_spec({"zones": ["a", "b", "c"], "replicasPerZone": 2, "voters": 5})
    )
    status = _settled(sim)
    smaller = THREE_BY_ONE
    sim.spec = smaller
    first = planner.plan(REF, smaller, status, sim.observation(), T0)
    assert first.zone_replicas == {"a": 2, "b": 2, "c": 1}  # voters a-1, b-1 still hold on
    sim.converge(status, T0)
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]
    assert sim.sts == {"a": 1, "b": 1, "c": 1}


# -- pods stuck Terminating on a dead node ---------------------------------------------------
#
# ds-c-0 (a voter) was deleted and its node died at DIED; the kubelet that would confirm
# the deletion is gone, so only a forced delete lets the StatefulSet replace it.

DIED = T0 + timedelta(seconds=10)


def _stuck(sim: SimCluster, pod: str = "ds-c-0", node_died: datetime | None = None) -> None:
    sim.pods[pod].deleting = True
    sim.dead_nodes[sim.pods[pod].node] = node_died or DIED


def _forced(p: planner.Plan) -> list[planner.PodAction]:
    return [a for a in p.pod_actions if a.kind is planner.PodActionKind.FORCE_DELETE]


@pytest.mark.parametrize(
    ("situation", "at", "forced"),
    [
        ("dead node past the timeout", DIED + TIMEOUT, True),
        ("dead node within the timeout", DIED + TIMEOUT - timedelta(seconds=1), False),
        ("node still Ready", DIED + TIMEOUT, False),
        ("node NotReady only recently", DIED + TIMEOUT, False),
        ("group without quorum", DIED + TIMEOUT, False),
        ("failover disabled", DIED + TIMEOUT, False),
    ],
)
def test_a_pod_stuck_terminating_on_a_dead_node(situation: str, at, forced: bool) -> None:
    spec = THREE_BY_ONE
    if situation == "failover disabled":
        spec = parse_spec({"zones": ["a", "b", "c"], "failover": {"enabled": False}})
    sim = SimCluster.healthy(spec)
    status = _settled(sim)
    _stuck(sim)
    if situation == "node still Ready":
        sim.dead_nodes.clear()  # Terminating on a live node: its kubelet finishes the job
    if situation == "group without quorum":
        sim.dead_zones.add("b")
    _, status = sim.step(status, DIED)  # the member's unhealthySince starts here
    if situation == "node NotReady only recently":
        # unhealthySince is old, but the node died just now: wait for the node's own clock.
        sim.dead_nodes[sim.pods["ds-c-0"].node] = at - timedelta(seconds=5)
    p = planner.plan(REF, spec, status, sim.observation(), at)
    if forced:
        assert _forced(p) == [
            planner.PodAction(
                planner.PodActionKind.FORCE_DELETE,
                "ds-c-0",
                uid="uid-c-0-0",
                reason="force-deleting ds-c-0: Terminating on NotReady node node-c-0 for over 60s",
            )
        ]
        assert _cond(p.status, ConditionType.PROGRESSING) == (True, "ForceDeletingPods")
        assert "ds-c-0" in p.status.condition(ConditionType.PROGRESSING).message
    else:
        assert _forced(p) == [], situation


def test_a_forced_pod_is_recreated_and_the_group_heals_without_acting_twice() -> None:
    sim = SimCluster.healthy(THREE_BY_ONE)
    status = _settled(sim)
    _stuck(sim)
    _, status = sim.step(status, DIED)
    status = sim.converge(status, DIED + TIMEOUT)
    assert sim.log == [("ForceDelete", "ds-c-0")]  # once; the new incarnation is healthy
    assert _voters(sim) == ["ds-a-0", "ds-b-0", "ds-c-0"]
    assert status.member("ds-c-0").healthy
