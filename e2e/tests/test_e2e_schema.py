"""The real API server judges what the operator and the chart produce: every object the
builders make, for a spread of specs, passes server-side dry-run with strict field
validation (an unknown or misspelt field is an error, not silently pruned), and the
CRD's own validation (defaults, CEL rules) answers as the CRD says."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from zonestore_e2e.cluster import Cluster
from zonestore_e2e.datastores import GROUP, PLURAL, VERSION, manifest
from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import parse_spec
from zonestore_operator.reconcile.kube import object_path
from zonestore_operator.resources.desired import desired_objects

SPECS: dict[str, dict[str, Any]] = {
    "defaults": {"zones": ["zone-a", "zone-b", "zone-c"]},
    "everything": {
        "zones": ["zone-a", "zone-b", "zone-c"],
        "replicasPerZone": 2,
        "voters": 5,
        "preferredLeaderZone": "zone-b",
        "storage": {"size": "5Gi", "storageClassName": "zonestore-e2e-local"},
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "ports": {"client": 18081, "admin": 19081, "peer": 17081},
        "updateStrategy": {"type": "OnDelete"},
        "pvcRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
        "podLabels": {"team": "orders"},
        "podAnnotations": {"example.com/owner": "orders"},
        "monitoring": {"scrapeAnnotations": False},
        "security": {
            "peerTLS": {"enabled": False},
            "clientTLS": {"enabled": True, "secretName": "my-client-tls"},
            "clientAuth": {"tokensSecretName": "my-tokens", "tokensSecretKey": "tokens.yaml"},
            "networkPolicy": {
                "clientNamespaceSelector": {"matchLabels": {"team": "orders"}},
                "clientPodSelector": {"matchLabels": {"app": "orders"}},
            },
        },
    },
    "no-network-policy": {
        "zones": ["zone-a"],
        "voters": 1,
        "security": {"networkPolicy": {"enabled": False}},
    },
}


@pytest.mark.parametrize("case", sorted(SPECS))
def test_builders_pass_strict_server_side_dry_run(
    cluster: Cluster, namespace: str, case: str
) -> None:
    spec = parse_spec(SPECS[case], "zs")
    ref = DatastoreRef("zs", namespace, uid="00000000-0000-0000-0000-000000000001")
    objects = desired_objects(
        ref, spec, {}, bootstrapped=False, operator_namespace="zonestore-system"
    )
    assert objects
    for obj in objects:
        path = object_path(obj["apiVersion"], obj["kind"], namespace)
        # Owner references point at a Datastore that does not exist; dry-run still
        # validates them structurally.
        status, answer = cluster.request(
            "POST", path, obj, {"dryRun": "All", "fieldValidation": "Strict"}
        )
        assert status in (200, 201), f"{obj['kind']} {obj['metadata']['name']} ({case}): {answer}"


def _create(api: Any, namespace: str, body: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
    )


def test_crd_defaults_and_validation(api: Any, namespace: str) -> None:
    """Defaults come from the API server; CEL rules refuse what they should."""
    created = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Datastore",
            "metadata": {"name": "defaults", "namespace": namespace},
            "spec": {"zones": ["zone-a", "zone-b", "zone-c"]},
        },
        dry_run="All",
    )
    spec = created["spec"]
    assert spec["replicasPerZone"] == 1 and spec["voters"] == 3
    assert spec["image"] == "zonestore/zonestore:0.1.0"
    assert spec["security"]["peerTLS"]["enabled"] is True
    assert spec["security"]["clientAuth"]["mode"] == "Tokens"

    bad = {
        "even voters": {"voters": 2},
        "duplicate zones": {"zones": ["zone-a", "zone-a", "zone-b"]},
        "more voters than replicas": {"voters": 5},
        "two listeners on one port": {"ports": {"client": 9081}},
        "unknown update strategy": {"updateStrategy": {"type": "Sometimes"}},
        "no auth but a tokens Secret": {
            "security": {"clientAuth": {"mode": "None", "tokensSecretName": "x"}}
        },
    }
    for what, patch in bad.items():
        body = manifest(f"bad-{len(what)}", namespace, **patch)
        with pytest.raises(client.ApiException) as info:
            _create(api, namespace, body)
        assert info.value.status == 422, (what, info.value.body)


def test_crd_guards_immutable_fields(api: Any, namespace: str) -> None:
    """spec.ports.peer cannot change once set (the members know each other by it). The
    Datastore names zones no Node has, so the operator's pods stay Pending."""
    custom = client.CustomObjectsApi(api)
    body = manifest("immutable", namespace, zones=["nowhere-1", "nowhere-2", "nowhere-3"])
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    with pytest.raises(client.ApiException) as info:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "immutable", {"spec": {"ports": {"peer": 7999}}}
        )
    assert info.value.status == 422
    assert "immutable" in str(info.value.body)
    # Peer TLS cannot be switched on a running group (a roll would lose quorum).
    with pytest.raises(client.ApiException) as info:
        custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            "immutable",
            {"spec": {"security": {"peerTLS": {"enabled": False}}}},
        )
    assert info.value.status == 422, info.value.body
