"""The four Services of a Datastore.

- `<name>-peers`: headless, publishNotReadyAddresses, gives every pod a stable DNS name
  for Raft traffic even before it is ready (a joining learner is not ready yet).
- `<name>`: the client Service, every ready replica (any node accepts any request).
- `<name>-leader`: only the pod labelled role=leader (writes without a forwarding hop).
- `<name>-readonly`: only followers (eventual reads off the leader).
Role labels are kept current by the operator from each node's /admin/status.
"""

from __future__ import annotations

from typing import Any

from zonestore_operator.model.ref import DatastoreRef
from zonestore_operator.model.spec import DatastoreSpec
from zonestore_operator.resources import meta


def _port(name: str, port: int) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": name, "protocol": "TCP"}


def _service(
    ref: DatastoreRef, name: str, component: str, selector: dict[str, str], ports: list[Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.object_meta(ref, name, component),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": ports},
    }


def peers_service(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    svc = _service(
        ref,
        meta.peers_service_name(ref),
        "peers",
        meta.selector_labels(ref),
        [
            _port("peer", spec.ports.peer),
            _port("admin", spec.ports.admin),
            _port("client", spec.ports.client),
        ],
    )
    svc["spec"]["clusterIP"] = "None"
    svc["spec"]["publishNotReadyAddresses"] = True
    return svc


def client_service(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    return _service(
        ref,
        meta.client_service_name(ref),
        "client",
        meta.selector_labels(ref),
        [_port("client", spec.ports.client)],
    )


def leader_service(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    return _service(
        ref,
        meta.leader_service_name(ref),
        "leader",
        {**meta.selector_labels(ref), meta.L_ROLE: meta.ROLE_LEADER},
        [_port("client", spec.ports.client)],
    )


def readonly_service(ref: DatastoreRef, spec: DatastoreSpec) -> dict[str, Any]:
    return _service(
        ref,
        meta.readonly_service_name(ref),
        "readonly",
        {**meta.selector_labels(ref), meta.L_ROLE: meta.ROLE_FOLLOWER},
        [_port("client", spec.ports.client)],
    )
