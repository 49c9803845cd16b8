"""Names, labels and owner references shared by every object a Datastore owns, and the
bootstrap layout (which pods form the initial Raft group).

Child names (for Datastore `orders`, zone `zone-a`):
  StatefulSet   orders-zone-a          pods orders-zone-a-0, -1, ...
  Services      orders (client), orders-leader, orders-readonly, orders-peers (headless)
  PDB           orders-voters          ConfigMap orders-config     ServiceAccount orders
  Secrets       orders-ca (the CA, never mounted), orders-peer-tls, orders-client-tls,
                orders-admin-token     NetworkPolicy orders-nodes
  cert-manager  Certificates orders-peer, orders-client (issuer certManager)
A node's Raft id is its pod name; its peer address is <pod>.<name>-peers.<ns>.svc:<peer>.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import API_VERSION, KIND, DatastoreSpec

MANAGER = "zonestore-operator"
APP = "zonestore"
COMPONENT_NODE = "node"

L_NAME = "app.kubernetes.io/name"
L_INSTANCE = "app.kubernetes.io/instance"
L_COMPONENT = "app.kubernetes.io/component"
L_MANAGED_BY = "app.kubernetes.io/managed-by"
L_ZONE = "zonestore.io/zone"
L_ROLE = "zonestore.io/role"
L_POD_INDEX = "apps.kubernetes.io/pod-index"

ROLE_LEADER = "leader"
ROLE_FOLLOWER = "follower"
ROLE_LEARNER = "learner"


def statefulset_name(ref: DatastoreRef, zone: str) -> str:
    return f"{ref.name}-{zone}"


def pod_name(ref: DatastoreRef, zone: str, ordinal: int) -> str:
    return f"{statefulset_name(ref, zone)}-{ordinal}"


def peers_service_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-peers"


def client_service_name(ref: DatastoreRef) -> str:
    return ref.name


def leader_service_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-leader"


def readonly_service_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-readonly"


def pdb_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-voters"


def configmap_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-config"


def service_account_name(ref: DatastoreRef) -> str:
    return ref.name


def ca_secret_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-ca"


def peer_tls_secret_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-peer-tls"


def client_tls_secret_name(ref: DatastoreRef, spec: DatastoreSpec) -> str:
    """The user's Secret when spec.security.clientTLS.secretName is set, else ours."""
    return spec.security.client_tls.secret_name or f"{ref.name}-client-tls"


def admin_token_secret_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-admin-token"


def client_tokens_secret_name(ref: DatastoreRef, spec: DatastoreSpec) -> str:
    """The clientAuth Secret: the user's, or the one the operator generates."""
    return spec.security.client_auth.tokens_secret_name or f"{ref.name}-client-tokens"


def network_policy_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-nodes"


def peer_certificate_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-peer"


def client_certificate_name(ref: DatastoreRef) -> str:
    return f"{ref.name}-client"


def peer_address(ref: DatastoreRef, spec: DatastoreSpec, pod: str) -> str:
    return f"{pod}.{peers_service_name(ref)}.{ref.namespace}.svc:{spec.ports.peer}"


def selector_labels(ref: DatastoreRef) -> dict[str, str]:
    """Labels that select every node pod of this Datastore (all zones)."""
    return {L_NAME: APP, L_INSTANCE: ref.name, L_COMPONENT: COMPONENT_NODE}


def labels(ref: DatastoreRef, component: str = COMPONENT_NODE) -> dict[str, str]:
    return {L_NAME: APP, L_INSTANCE: ref.name, L_COMPONENT: component, L_MANAGED_BY: MANAGER}


def selector_string(ref: DatastoreRef) -> str:
    """`selector_labels` as a label-selector string (status.selector, for the scale
    subresource and for listing pods)."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(ref).items())


def owner_reference(ref: DatastoreRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": ref.name,
        "uid": ref.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(
    ref: DatastoreRef, name: str, component: str, extra_labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": ref.namespace,
        "labels": {**labels(ref, component), **(extra_labels or {})},
        "ownerReferences": [owner_reference(ref)],
    }


def bootstrap_members(ref: DatastoreRef, spec: DatastoreSpec) -> list[str]:
    """The pods that form the initial Raft group: `spec.voters` pods dealt round-robin
    over the zones, lowest ordinals first (3 voters over zones a,b,c -> a-0, b-0, c-0;
    5 voters over 3 zones x 2 -> a-0, b-0, c-0, a-1, b-1). Every other pod starts with
    --join and is added as a learner by the operator. A recovery (spec.bootstrap.recovery)
    starts from one pod: the first zone's first."""
    n = len(spec.zones)
    if spec.recovery is not None:
        # A recovery starts as the restored group of one (its only voter is the pod the
        # init container restored, statefulset.restore_init_container); every other pod
        # joins as a learner and is promoted as usual.
        return [pod_name(ref, spec.zones[0], 0)]
    return [pod_name(ref, spec.zones[i % n], i // n) for i in range(spec.voters)]


def initial_cluster(ref: DatastoreRef, spec: DatastoreSpec) -> str:
    return ",".join(f"{pod}={peer_address(ref, spec, pod)}" for pod in bootstrap_members(ref, spec))
