"""The node pods' NetworkPolicy: peer port from the Datastore's own pods, admin port from
the operator (and Prometheus when asked), client port from the configured selectors
(default: the Datastore's namespace); off when networkPolicy.enabled is false."""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.resources import meta, security
from zonestore_operator.resources.desired import desired_objects

REF = DatastoreRef(name="orders", namespace="shop", uid="u")
ZONES = ["zone-a", "zone-b", "zone-c"]
OWN_PODS = {
    "app.kubernetes.io/name": "zonestore",
    "app.kubernetes.io/instance": "orders",
    "app.kubernetes.io/component": "node",
}


def _rules(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for rule in policy["spec"]["ingress"]:
        [port] = rule["ports"]
        assert port["protocol"] == "TCP"
        out[port["port"]] = rule["from"]
    return out


def test_default_policy_isolates_peer_and_admin_ports_and_opens_client_to_the_namespace() -> None:
    spec = parse_spec({"zones": ZONES})
    policy = security.network_policy(REF, spec, "zonestore-system")
    assert policy["metadata"]["name"] == "orders-nodes"
    assert policy["spec"]["podSelector"] == {"matchLabels": OWN_PODS}
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress (DNS, peers) untouched
    rules = _rules(policy)
    assert set(rules) == {7081, 9081, 8081}
    assert rules[7081] == [{"podSelector": {"matchLabels": OWN_PODS}}]
    assert rules[9081] == [
        {
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "zonestore-operator"}},
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "zonestore-system"}
            },
        }
    ]
    assert rules[8081] == [{"podSelector": {}}]  # same namespace only


def test_operator_pod_label_is_the_charts_selector_label() -> None:
    from chartkit import one, render

    deployment = one(render(), "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert security.OPERATOR_POD_LABELS.items() <= labels.items()


def test_unknown_operator_namespace_matches_operator_pods_in_any_namespace() -> None:
    policy = security.network_policy(REF, parse_spec({"zones": ZONES}), None)
    [operator] = _rules(policy)[9081]
    assert operator["namespaceSelector"] == {}


def test_custom_selectors_shape_client_and_monitoring_access() -> None:
    apps = {"matchLabels": {"team": "orders"}}
    frontends = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]}
    monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    prometheus = {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}
    spec = parse_spec(
        {
            "zones": ZONES,
            "ports": {"client": 443, "admin": 9443, "peer": 7443},
            "security": {
                "networkPolicy": {
                    "clientNamespaceSelector": apps,
                    "clientPodSelector": frontends,
                    "monitoringNamespaceSelector": monitoring,
                    "monitoringPodSelector": prometheus,
                }
            },
        }
    )
    rules = _rules(security.network_policy(REF, spec, "ops"))
    assert set(rules) == {443, 9443, 7443}
    # One peer with both selectors: a pod must match both (AND), not either.
    assert rules[443] == [{"namespaceSelector": apps, "podSelector": frontends}]
    assert rules[9443][1] == {"namespaceSelector": monitoring, "podSelector": prometheus}
    assert len(rules[9443]) == 2


def test_only_a_client_namespace_selector_admits_every_pod_there() -> None:
    apps = {"matchLabels": {"team": "orders"}}
    spec = parse_spec(
        {"zones": ZONES, "security": {"networkPolicy": {"clientNamespaceSelector": apps}}}
    )
    assert _rules(security.network_policy(REF, spec, None))[8081] == [{"namespaceSelector": apps}]


def test_disabled_policy_is_not_built() -> None:
    spec = parse_spec({"zones": ZONES, "security": {"networkPolicy": {"enabled": False}}})
    kinds = {o["kind"] for o in desired_objects(REF, spec, {}, bootstrapped=False)}
    assert "NetworkPolicy" not in kinds


def test_policy_comes_before_the_workloads_it_protects() -> None:
    objects = desired_objects(REF, parse_spec({"zones": ZONES}), {}, bootstrapped=False)
    kinds = [o["kind"] for o in objects]
    assert kinds.index("NetworkPolicy") < kinds.index("StatefulSet")
    policy = objects[kinds.index("NetworkPolicy")]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u"
    assert policy["spec"]["podSelector"]["matchLabels"] == meta.selector_labels(REF)
