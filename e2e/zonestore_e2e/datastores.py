"""Scenario-side view of one `Datastore`: its manifest, its status, its pods, and the
client addresses to reach them. Everything is read from the API server; nothing here
talks to a node except through its pod IP, as an application in the cluster would."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zonestore_e2e.cluster import DEFAULT_ZONES, Cluster, wait_for

GROUP, VERSION, PLURAL = "zonestore.io", "v1alpha1", "datastores"
CLIENT_PORT = 8081
ADMIN_PORT = 9081


def manifest(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small three-zone Datastore: one replica per zone (three voters), a short zone
    timeout so a failover fits in a test, 1Gi volumes on the e2e StorageClass, client
    auth at its default (None: the scenarios' official clients go through
    DATASTORE_EMULATOR_HOST, which sends no credentials). `spec` merges over that (nested
    dicts key by key); `None` values drop a key."""
    base: dict[str, Any] = {
        "image": "zonestore/zonestore:0.1.0",
        "zones": list(DEFAULT_ZONES),
        "replicasPerZone": 1,
        "voters": 3,
        "storage": {"size": "1Gi"},
        "failover": {"enabled": True, "zoneTimeoutSeconds": 15, "maxAutomaticReplacements": 1},
        "pvcRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Delete"},
    }
    merged = _merge(base, spec)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Datastore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": merged,
    }


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class PodView:
    name: str
    uid: str
    zone: str
    node: str
    ip: str | None
    ready: bool
    deleting: bool
    phase: str

    @property
    def client_addr(self) -> str:
        return f"{self.ip}:{CLIENT_PORT}"


class DatastoreHandle:
    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.name = name

    @property
    def selector(self) -> str:
        """The node pods' selector, as the operator labels them."""
        from zonestore_operator.model.ref import DatastoreRef
        from zonestore_operator.resources import meta

        return meta.selector_string(DatastoreRef(self.name, self.namespace, uid=""))

    # -- API ------------------------------------------------------------------------

    def create(self, body: dict[str, Any]) -> None:
        from kubernetes import client

        with self.cluster.api() as api:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            )

    def patch_spec(self, spec: dict[str, Any]) -> None:
        from kubernetes import client

        with self.cluster.api() as api:
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, {"spec": spec}
            )

    def delete(self) -> None:
        from kubernetes import client

        with self.cluster.api() as api:
            client.CustomObjectsApi(api).delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )

    def get(self) -> dict[str, Any] | None:
        from kubernetes import client

        with self.cluster.api() as api:
            try:
                obj: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, self.name
                )
                return dict(obj)
            except client.ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def status(self) -> dict[str, Any]:
        obj = self.get() or {}
        status: dict[str, Any] = obj.get("status") or {}
        return status

    def condition(self, kind: str) -> str | None:
        for c in self.status().get("conditions", []):
            if c.get("type") == kind:
                return str(c.get("status"))
        return None

    def voters(self) -> list[dict[str, Any]]:
        return [m for m in self.status().get("members", []) if m.get("membership") == "Voter"]

    def healthy_voters(self) -> list[dict[str, Any]]:
        return [m for m in self.voters() if m.get("healthy")]

    def pods(self) -> list[PodView]:
        from kubernetes import client

        with self.cluster.api() as api:
            items: list[Any] = (
                client.CoreV1Api(api)
                .list_namespaced_pod(self.namespace, label_selector=self.selector)
                .items
            )
        out = []
        for p in items:
            ready = any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
            node = p.spec.node_name or ""
            zone = next((n.zone for n in self.cluster.nodes if n.name == node), "")
            out.append(
                PodView(
                    name=p.metadata.name,
                    uid=p.metadata.uid,
                    zone=zone,
                    node=node,
                    ip=p.status.pod_ip,
                    ready=ready,
                    deleting=p.metadata.deletion_timestamp is not None,
                    phase=p.status.phase or "",
                )
            )
        return sorted(out, key=lambda p: p.name)

    def ready_pods(self, exclude_zones: tuple[str, ...] = ()) -> list[PodView]:
        return [
            p
            for p in self.pods()
            if p.ready and p.ip and not p.deleting and p.zone not in exclude_zones
        ]

    def client_addrs(self, exclude_zones: tuple[str, ...] = ()) -> list[str]:
        return [p.client_addr for p in self.ready_pods(exclude_zones)]

    # -- waits ----------------------------------------------------------------------

    def wait_ready(self, timeout_s: float = 240) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            st = self.status()
            conds = {c.get("type"): c.get("status") for c in st.get("conditions", [])}
            if conds.get("Ready") == "True" and st.get("leader"):
                return st
            return None

        return wait_for(f"Datastore {self.namespace}/{self.name} Ready", ready, timeout_s, 1.0)

    def leader_pod(self) -> PodView | None:
        leader = self.status().get("leader")
        return next((p for p in self.pods() if p.name == leader), None)
