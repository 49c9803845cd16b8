"""Changing spec.security.peerTLS.enabled on a running group is refused: a node speaks TLS
or plaintext to its peers, never both, so a rolling update into the other setting would
lose quorum. The CRD has a CEL transition rule; for a CRD that was not upgraded, the
operator keeps the setting the pods run with, reports Stalled=True (reason
PeerTLSChangeRefused, one Warning Event) and clears it when the spec matches again."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from simcluster import REF, T0, SimCluster
from test_op_loop import FakeAdmin, FakeKube

from zonestore_operator.model.spec import DatastoreSpec, parse_spec
from zonestore_operator.model.status import ConditionType, DatastoreStatus, parse_status
from zonestore_operator.reconcile import transitions
from zonestore_operator.reconcile.loop import reconcile
from zonestore_operator.reconcile.observation import Observation, PodObservation
from zonestore_operator.resources import statefulset

ZONES = ["a", "b", "c"]
TLS = parse_spec({"zones": ZONES})
PLAIN = parse_spec({"zones": ZONES, "security": {"peerTLS": {"enabled": False}}})


def _obs(*modes: bool | None) -> Observation:
    pods = {
        f"ds-{z}-0": PodObservation(f"ds-{z}-0", z, 0, peer_tls=m)
        for z, m in zip(ZONES, modes, strict=False)
    }
    return Observation(pods=pods)


# Reading what runs ---------------------------------------------------------------------


def test_a_pod_built_with_peer_tls_is_read_back_as_such() -> None:
    for spec, expected in ((TLS, True), (PLAIN, False)):
        template = statefulset.statefulset(REF, spec, "a", 1)["spec"]["template"]
        assert statefulset.runs_peer_tls(template) is expected
    assert statefulset.runs_peer_tls({"spec": {"containers": [{"name": "other"}]}}) is None
    assert statefulset.runs_peer_tls({}) is None


def test_the_group_runs_a_setting_only_when_every_pod_agrees() -> None:
    assert transitions.running_peer_tls(_obs(True, True, True)) is True
    assert transitions.running_peer_tls(_obs(False, None, False)) is False
    assert transitions.running_peer_tls(_obs(True, False, True)) is None  # half rolled
    assert transitions.running_peer_tls(Observation()) is None  # nothing runs yet


# The pure guard ------------------------------------------------------------------------


def test_turning_peer_tls_off_on_a_tls_group_is_refused_and_tls_kept() -> None:
    effective, refusal = transitions.effective_spec(PLAIN, _obs(True, True, True))
    assert effective == TLS  # everything else as asked; peer TLS as it runs
    assert refusal is not None and refusal.reason == "PeerTLSChangeRefused"
    assert "is false but the node pods run with true" in refusal.message
    assert "Set it back to true" in refusal.message
    assert "create a new Datastore" in refusal.message


def test_turning_peer_tls_on_on_a_plaintext_group_is_refused_and_plaintext_kept() -> None:
    effective, refusal = transitions.effective_spec(TLS, _obs(False, False, False))
    assert effective == PLAIN
    assert refusal is not None and "is true but the node pods run with false" in refusal.message


def test_a_matching_new_or_half_rolled_group_takes_the_spec_as_it_is() -> None:
    for spec, obs in (
        (TLS, _obs(True, True, True)),
        (PLAIN, _obs(False, False, False)),
        (TLS, Observation()),  # a new Datastore: nothing to protect yet
        (PLAIN, _obs(True, False, False)),  # setting it back finishes a stalled roll
    ):
        assert transitions.effective_spec(spec, obs) == (spec, None)


def test_stalled_is_set_once_announced_once_and_cleared_when_the_spec_matches() -> None:
    _, refusal = transitions.effective_spec(PLAIN, _obs(True, True, True))
    quiet, notices = transitions.report(DatastoreStatus(), None, T0, 1)
    assert quiet.condition(ConditionType.STALLED) is None and notices == ()

    first, notices = transitions.report(DatastoreStatus(), refusal, T0, 2)
    stalled = first.condition(ConditionType.STALLED)
    assert stalled is not None and refusal is not None
    assert (stalled.status, stalled.reason, stalled.message) == (
        True,
        "PeerTLSChangeRefused",
        refusal.message,
    )
    assert [(n.type, n.reason) for n in notices] == [("Warning", "PeerTLSChangeRefused")]

    later = T0 + timedelta(minutes=5)
    again, notices = transitions.report(first, refusal, later, 2)
    assert notices == ()  # announced once
    kept = again.condition(ConditionType.STALLED)
    assert kept is not None and kept.last_transition_time == T0

    cleared, notices = transitions.report(again, None, later, 3)
    done = cleared.condition(ConditionType.STALLED)
    assert done is not None and (done.status, done.reason) == (False, "SpecApplicable")
    assert done.last_transition_time == later and notices == ()
    assert parse_status(cleared.to_dict()).condition(ConditionType.STALLED) == done


# The CRD -------------------------------------------------------------------------------


def test_crd_makes_peer_tls_immutable_with_a_rule_that_says_how_to_migrate(
    crd_schema: dict,
) -> None:
    peer = crd_schema["properties"]["spec"]["properties"]["security"]["properties"]["peerTLS"]
    assert peer["default"] == {"enabled": True}  # spelled out for the rule
    [rule] = peer["properties"]["enabled"]["x-kubernetes-validations"]
    assert rule["rule"] == "self == oldSelf"
    assert "lose quorum" in rule["message"] and "new Datastore" in rule["message"]


# Through the reconcile loop ------------------------------------------------------------


class PodArgsKube(FakeKube):
    """FakeKube whose pods carry the container args a given peer TLS setting builds."""

    def __init__(self, sim: SimCluster, body: dict[str, Any], running: DatastoreSpec) -> None:
        super().__init__(sim, body)
        self.running = running

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        pods = await super().list_pods(namespace, selector)
        for pod in pods:
            zone = pod["metadata"]["labels"]["zonestore.io/zone"]
            args = statefulset.serve_command(REF, self.running, zone)
            pod["spec"]["containers"] = [{"name": "zonestore", "args": args}]
        return pods


def _body(security: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "zonestore.io/v1alpha1",
        "kind": "Datastore",
        "metadata": {"name": REF.name, "namespace": REF.namespace, "uid": REF.uid, "generation": 1},
        "spec": {"zones": ZONES, "security": security},
    }


def _sts_args(kube: FakeKube) -> list[list[str]]:
    return [
        obj["spec"]["template"]["spec"]["containers"][0]["args"]
        for (kind, _), obj in sorted(kube.applied.items())
        if kind == "StatefulSet"
    ]


def _stalled(kube: FakeKube) -> tuple[str, str] | None:
    for c in kube.body["status"].get("conditions", []):
        if c["type"] == "Stalled":
            return c["status"], c["reason"]
    return None


def test_loop_keeps_tls_on_a_running_tls_group_and_reports_until_set_back() -> None:
    sim = SimCluster.healthy(TLS)
    kube = PodArgsKube(sim, _body({}), running=TLS)
    admin = FakeAdmin(sim)
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0))
    assert _stalled(kube) is None

    kube.body["spec"]["security"] = {"peerTLS": {"enabled": False}}
    kube.events.clear()
    for seconds in (10, 20):
        asyncio.run(
            reconcile(kube.body, kube, admin, clock=lambda s=seconds: T0 + timedelta(seconds=s))
        )
    assert all("--peer-tls-cert" in args for args in _sts_args(kube))
    assert _stalled(kube) == ("True", "PeerTLSChangeRefused")
    assert kube.events.count(("Warning", "PeerTLSChangeRefused")) == 1

    kube.body["spec"]["security"] = {"peerTLS": {"enabled": True}}
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0 + timedelta(seconds=30)))
    assert _stalled(kube) == ("False", "SpecApplicable")


def test_loop_keeps_a_plaintext_group_plaintext_and_issues_no_peer_certificates() -> None:
    sim = SimCluster.healthy(PLAIN)
    kube = PodArgsKube(sim, _body({"peerTLS": {"enabled": True}}), running=PLAIN)
    asyncio.run(reconcile(kube.body, kube, FakeAdmin(sim), clock=lambda: T0))
    assert _sts_args(kube) and all("--peer-tls-cert" not in a for a in _sts_args(kube))
    assert not [name for _, name in kube.writes if name in ("ds-ca", "ds-peer-tls")]
    assert _stalled(kube) == ("True", "PeerTLSChangeRefused")


def test_loop_reads_the_peer_secrets_it_keeps_mounting_when_asked_to_drop_tls() -> None:
    # The spec alone would not read ds-peer-tls; the kept setting needs it, and it exists:
    # nothing may be re-created (a CREATE that loses would stop the pass every time).
    sim = SimCluster.healthy(TLS)
    kube = PodArgsKube(sim, _body({}), running=TLS)
    admin = FakeAdmin(sim)
    asyncio.run(reconcile(kube.body, kube, admin, clock=lambda: T0))
    kube.body["spec"]["security"] = {"peerTLS": {"enabled": False}}
    kube.writes.clear()
    kube.applied.clear()
    outcome = asyncio.run(
        reconcile(kube.body, kube, admin, clock=lambda: T0 + timedelta(seconds=10))
    )
    assert outcome.error is None and kube.writes == []
    assert len(_sts_args(kube)) == 3  # the pass went through to the StatefulSets
    assert _stalled(kube) == ("True", "PeerTLSChangeRefused")
