"""The ConfigMap (bootstrap layout the boot wrapper reads) and the node ServiceAccount.

The ConfigMap holds `initial-cluster` (the bootstrap voters) and `cluster-state`: `new`
until the operator has seen a leader, then `existing` for good, so that a pod recreated
later (on a fresh disk) joins as a learner instead of bootstrapping a second group.
The node does not call the Kubernetes API: its ServiceAccount has no RBAC and no token.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import meta


def configmap(ref: DatastoreRef, spec: DatastoreSpec, bootstrapped: bool) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta.object_meta(ref, meta.configmap_name(ref), "config"),
        "data": {
            "initial-cluster": meta.initial_cluster(ref, spec),
            "cluster-state": "existing" if bootstrapped else "new",
            "zones": ",".join(spec.zones),
            "voters": str(spec.voters),
        },
    }


def service_account(ref: DatastoreRef) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta.object_meta(ref, meta.service_account_name(ref), "node"),
        "automountServiceAccountToken": False,
    }
