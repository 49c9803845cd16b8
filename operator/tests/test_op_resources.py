"""The pure builders: the objects a Datastore owns, for default and non-default specs."""

from __future__ import annotations

import pytest

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.resources import meta, policy, statefulset
from zonestore_operator.resources.desired import desired_objects

REF = DatastoreRef(name="orders", namespace="shop", uid="uid-1", generation=3)
DEFAULT = parse_spec({"zones": ["zone-a", "zone-b", "zone-c"]})


def _by_kind_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_default_spec_yields_one_statefulset_per_zone_and_the_shared_objects() -> None:
    objects = _by_kind_name(desired_objects(REF, DEFAULT, {}, bootstrapped=False))
    assert sorted(objects) == [
        ("ConfigMap", "orders-config"),
        ("NetworkPolicy", "orders-nodes"),
        ("PodDisruptionBudget", "orders-voters"),
        ("Service", "orders"),
        ("Service", "orders-leader"),
        ("Service", "orders-peers"),
        ("Service", "orders-readonly"),
        ("ServiceAccount", "orders"),
        ("StatefulSet", "orders-zone-a"),
        ("StatefulSet", "orders-zone-b"),
        ("StatefulSet", "orders-zone-c"),
    ]


def test_every_object_is_owned_by_the_datastore_and_labelled() -> None:
    for obj in desired_objects(REF, DEFAULT, {}, bootstrapped=False):
        md = obj["metadata"]
        assert md["namespace"] == "shop"
        assert md["ownerReferences"] == [
            {
                "apiVersion": "zonestore.io/v1alpha1",
                "kind": "Datastore",
                "name": "orders",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert md["labels"]["app.kubernetes.io/name"] == "zonestore"
        assert md["labels"]["app.kubernetes.io/instance"] == "orders"
        assert md["labels"]["app.kubernetes.io/managed-by"] == "zonestore-operator"
        assert md["labels"]["app.kubernetes.io/component"]


def test_statefulset_is_pinned_to_its_zone_and_restarts_only_on_delete() -> None:
    sts = statefulset.statefulset(REF, DEFAULT, "zone-b", 2)
    spec = sts["spec"]
    assert spec["replicas"] == 2
    assert spec["updateStrategy"] == {"type": "OnDelete"}
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "orders-peers"
    pod = spec["template"]["spec"]
    term = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-b"]}
    ]
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["zonestore.io/zone"] == (
        "zone-b"
    )
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()


def test_statefulset_runs_zonestore_serve_with_the_contract_arguments() -> None:
    sts = statefulset.statefulset(REF, DEFAULT, "zone-a", 1)
    [container] = sts["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "zonestore",
        "serve",
        "--node-id",
        "$(POD_NAME)",
        "--zone",
        "zone-a",
        "--data-dir",
        "/var/lib/zonestore",
        "--client-addr",
        "0.0.0.0:8081",
        "--admin-addr",
        "0.0.0.0:9081",
        "--peer-addr",
        "0.0.0.0:7081",
        "--advertise-peer-addr",
        "$(POD_NAME).orders-peers.shop.svc:7081",
        "--initial-cluster",
        "$(ZONESTORE_INITIAL_CLUSTER)",
        "--admin-token-file",
        "/etc/zonestore/admin/token",
        "--peer-tls-cert",
        "/etc/zonestore/peer-tls/tls.crt",
        "--peer-tls-key",
        "/etc/zonestore/peer-tls/tls.key",
        "--peer-tls-ca",
        "/etc/zonestore/peer-tls/ca.crt",
    ]  # no --auth-tokens: clientAuth defaults to None
    env = {e["name"]: e for e in container["env"]}
    assert env["ZONESTORE_DATA_DIR"]["value"] == "/var/lib/zonestore"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["ZONESTORE_CLUSTER_STATE"]["valueFrom"]["configMapKeyRef"]["key"] == "cluster-state"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 9081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 9081}
    assert container["volumeMounts"] == [
        {"name": "data", "mountPath": "/var/lib/zonestore"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "admin-token", "mountPath": "/etc/zonestore/admin", "readOnly": True},
        {"name": "peer-tls", "mountPath": "/etc/zonestore/peer-tls", "readOnly": True},
    ]


def test_boot_wrapper_bootstraps_only_initial_members_of_a_new_group(tmp_path) -> None:
    import subprocess

    def run(pod: str, state: str) -> str:
        env = {
            "POD_NAME": pod,
            "ZONESTORE_CLUSTER_STATE": state,
            "ZONESTORE_INITIAL_CLUSTER": "o-a-0=o-a-0.p:7081,o-b-0=o-b-0.p:7081",
            "PATH": "/usr/bin:/bin",
        }
        argv = ["/bin/sh", "-c", statefulset.BOOT_SCRIPT, "boot", "echo", "serve"]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout

    assert run("o-b-0", "new") == "serve\n"
    assert run("o-a-1", "new") == "serve --join\n"
    assert run("o-a-0", "existing") == "serve --join\n"


def test_non_default_spec_reaches_the_pod_template_and_claims() -> None:
    spec = parse_spec(
        {
            "zones": ["z1", "z2", "z3"],
            "image": "reg/zs:2",
            "ports": {"client": 1001, "admin": 1002, "peer": 1003},
            "storage": {"size": "5Gi", "storageClassName": "fast"},
            "resources": {"limits": {"memory": "1Gi"}},
            "pvcRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
            "podLabels": {"team": "t", "app.kubernetes.io/instance": "hijack"},
            "podAnnotations": {"note": "n"},
            "topologyKey": "example.com/rack",
        }
    )
    sts = statefulset.statefulset(REF, spec, "z1", 1)
    template = sts["spec"]["template"]
    [container] = template["spec"]["containers"]
    assert container["image"] == "reg/zs:2"
    assert container["resources"] == {"limits": {"memory": "1Gi"}}
    assert "0.0.0.0:1001" in container["args"]
    assert "$(POD_NAME).orders-peers.shop.svc:1003" in container["args"]
    assert template["metadata"]["labels"]["team"] == "t"
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "orders"
    assert template["metadata"]["annotations"]["note"] == "n"
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "1002"
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast"
    assert claim["resources"]["requests"]["storage"] == "5Gi"
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }
    expr = template["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expr["key"] == "example.com/rack"


@pytest.mark.parametrize(
    ("zones", "per_zone", "voters", "expected"),
    [
        (["a", "b", "c"], 1, 3, ["orders-a-0", "orders-b-0", "orders-c-0"]),
        (
            ["a", "b", "c"],
            2,
            5,
            ["orders-a-0", "orders-b-0", "orders-c-0", "orders-a-1", "orders-b-1"],
        ),
        (["a", "b"], 2, 3, ["orders-a-0", "orders-b-0", "orders-a-1"]),
        (["a"], 3, 3, ["orders-a-0", "orders-a-1", "orders-a-2"]),
        (["a", "b", "c"], 3, 1, ["orders-a-0"]),
    ],
)
def test_bootstrap_voters_are_dealt_round_robin_over_zones(
    zones: list[str], per_zone: int, voters: int, expected: list[str]
) -> None:
    spec = parse_spec({"zones": zones, "replicasPerZone": per_zone, "voters": voters})
    assert meta.bootstrap_members(REF, spec) == expected


def test_configmap_names_the_initial_cluster_and_flips_to_existing_once_bootstrapped() -> None:
    objects = _by_kind_name(desired_objects(REF, DEFAULT, {}, bootstrapped=False))
    data = objects[("ConfigMap", "orders-config")]["data"]
    assert data["initial-cluster"] == (
        "orders-zone-a-0=orders-zone-a-0.orders-peers.shop.svc:7081,"
        "orders-zone-b-0=orders-zone-b-0.orders-peers.shop.svc:7081,"
        "orders-zone-c-0=orders-zone-c-0.orders-peers.shop.svc:7081"
    )
    assert data["cluster-state"] == "new"
    later = _by_kind_name(desired_objects(REF, DEFAULT, {}, bootstrapped=True))
    assert later[("ConfigMap", "orders-config")]["data"]["cluster-state"] == "existing"


def test_zone_replica_counts_from_the_planner_size_the_statefulsets() -> None:
    objects = _by_kind_name(desired_objects(REF, DEFAULT, {"zone-a": 2}, bootstrapped=True))
    assert objects[("StatefulSet", "orders-zone-a")]["spec"]["replicas"] == 2
    assert objects[("StatefulSet", "orders-zone-b")]["spec"]["replicas"] == 1


def test_services_select_all_leader_and_follower_pods() -> None:
    objects = _by_kind_name(desired_objects(REF, DEFAULT, {}, bootstrapped=False))
    peers = objects[("Service", "orders-peers")]["spec"]
    assert peers["clusterIP"] == "None"
    assert peers["publishNotReadyAddresses"] is True
    assert {p["port"] for p in peers["ports"]} == {7081, 9081, 8081}
    client = objects[("Service", "orders")]["spec"]
    assert "zonestore.io/role" not in client["selector"]
    assert client["ports"] == [
        {"name": "client", "port": 8081, "targetPort": "client", "protocol": "TCP"}
    ]
    assert (
        objects[("Service", "orders-leader")]["spec"]["selector"]["zonestore.io/role"] == "leader"
    )
    assert (
        objects[("Service", "orders-readonly")]["spec"]["selector"]["zonestore.io/role"]
        == "follower"
    )


@pytest.mark.parametrize(
    ("voters", "min_available", "allowed"),
    [(1, 1, 0), (3, 2, 1), (5, 3, 2), (7, 4, 3)],
)
def test_pdb_keeps_a_quorum_of_voters(voters: int, min_available: int, allowed: int) -> None:
    spec = parse_spec({"zones": ["a", "b", "c"], "replicasPerZone": 3, "voters": voters})
    pdb = policy.pod_disruption_budget(REF, spec)
    assert pdb["spec"]["minAvailable"] == min_available
    assert policy.disruptions_allowed(voters) == allowed
    # Whatever the budget lets go, a strict majority of voters stays.
    assert voters - allowed > voters / 2
    assert voters - (allowed + 1) <= voters / 2
    assert "maxUnavailable" not in pdb["spec"]
    [expr] = pdb["spec"]["selector"]["matchExpressions"]
    assert expr == {"key": "zonestore.io/role", "operator": "In", "values": ["leader", "follower"]}


def test_node_service_account_gets_no_token() -> None:
    objects = _by_kind_name(desired_objects(REF, DEFAULT, {}, bootstrapped=False))
    assert objects[("ServiceAccount", "orders")]["automountServiceAccountToken"] is False
    sts = objects[("StatefulSet", "orders-zone-a")]
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "orders"


def test_pod_monitor_only_when_asked_for_and_shaped_like_the_charts() -> None:
    plain = desired_objects(REF, DEFAULT, {}, bootstrapped=True)
    assert "PodMonitor" not in {o["kind"] for o in plain}
    spec = parse_spec({"zones": ["zone-a", "zone-b", "zone-c"], "monitoring": {"podMonitor": True}})
    [monitor] = [
        o for o in desired_objects(REF, spec, {}, bootstrapped=True) if o["kind"] == "PodMonitor"
    ]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"] == REF.name
    assert monitor["metadata"]["namespace"] == REF.namespace
    assert monitor["metadata"]["ownerReferences"][0]["uid"] == REF.uid
    assert monitor["spec"]["selector"] == {"matchLabels": meta.selector_labels(REF)}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("admin", "/metrics")
    relabel = {r["targetLabel"]: r for r in endpoint["relabelings"]}
    assert relabel["job"]["replacement"] == "zonestore"
    assert relabel["datastore"]["sourceLabels"] == [
        "__meta_kubernetes_pod_label_app_kubernetes_io_instance"
    ]
    assert relabel["zone"]["sourceLabels"] == ["__meta_kubernetes_pod_label_zonestore_io_zone"]
    # The port it names exists on the node container.
    [sts, *_] = [o for o in plain if o["kind"] == "StatefulSet"]
    ports = sts["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert "admin" in {p["name"] for p in ports}
